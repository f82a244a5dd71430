;; hello: prints its arguments (after argv[0]) to stdout, reads in.txt from the
;; first preopened directory (fd 3, /golem/input) if it is there, and writes
;; "hello from wasm: <input or 'no input'>" to x in the second one (fd 4,
;; /golem/output); "done" goes to stderr. Exits 3 if it can not write x.
(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  ;; 0: argc, 4: argv buffer size, 16: iovec, 24: nwritten/nread, 32: opened fd
  (data (i32.const 100) "in.txt")
  (data (i32.const 110) "x")
  (data (i32.const 120) "hello from wasm: ")
  (data (i32.const 160) "no input")
  (data (i32.const 170) "done\n")

  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 16) (local.get $ptr))
    (i32.store (i32.const 20) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 24))))

  (func (export "_start")
    (local $argc i32) (local $size i32) (local $start i32) (local $end i32)
    (local $i i32) (local $in i32) (local $n i32) (local $out i32)
    ;; argv pointers at 1024, argv strings at 2048
    (drop (call $args_sizes_get (i32.const 0) (i32.const 4)))
    (local.set $argc (i32.load (i32.const 0)))
    (local.set $size (i32.load (i32.const 4)))
    (drop (call $args_get (i32.const 1024) (i32.const 2048)))
    (local.set $end (i32.add (i32.const 2048) (local.get $size)))
    (if (i32.gt_u (local.get $argc) (i32.const 1))
      (then
        (local.set $start (i32.load (i32.const 1028)))
        (local.set $i (local.get $start))
        (block $done
          (loop $next
            (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
            (if (i32.eqz (i32.load8_u (local.get $i)))
              (then (i32.store8 (local.get $i) (i32.const 32))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $next)))
        (i32.store8 (i32.sub (local.get $end) (i32.const 1)) (i32.const 10))
        (call $write (i32.const 1) (local.get $start) (i32.sub (local.get $end) (local.get $start))))
      (else
        (i32.store8 (i32.const 40) (i32.const 10))
        (call $write (i32.const 1) (i32.const 40) (i32.const 1))))
    ;; input: rights fd_read (2)
    (if (i32.eqz (call $path_open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 6)
                   (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 32)))
      (then
        (local.set $in (i32.load (i32.const 32)))
        (i32.store (i32.const 16) (i32.const 8192))
        (i32.store (i32.const 20) (i32.const 1024))
        (drop (call $fd_read (local.get $in) (i32.const 16) (i32.const 1) (i32.const 24)))
        (local.set $n (i32.load (i32.const 24)))
        (drop (call $fd_close (local.get $in))))
      (else
        (memory.copy (i32.const 8192) (i32.const 160) (i32.const 8))
        (local.set $n (i32.const 8))))
    ;; output: O_CREAT | O_TRUNC (9), rights fd_write (64)
    (if (i32.eqz (call $path_open (i32.const 4) (i32.const 0) (i32.const 110) (i32.const 1)
                   (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 32)))
      (then
        (local.set $out (i32.load (i32.const 32)))
        (call $write (local.get $out) (i32.const 120) (i32.const 17))
        (call $write (local.get $out) (i32.const 8192) (local.get $n))
        (drop (call $fd_close (local.get $out))))
      (else (call $proc_exit (i32.const 3))))
    (call $write (i32.const 2) (i32.const 170) (i32.const 5))))
