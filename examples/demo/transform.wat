;; transform: the demo's task program (WASI preview 1). Usage:
;;   transform IN OUT
;; reads /golem/input/IN (the first preopened dir, fd 3), writes it upper-cased
;; to /golem/output/OUT (the second, fd 4) and prints "IN -> OUT: N bytes".
;; Exits 2 on missing arguments, 3 if IN cannot be opened, 4 if OUT cannot be
;; created. golem-requestor compiles .wat packages itself (the `wat` crate);
;; `wat2wasm --enable-bulk-memory transform.wat` does the same by hand.
(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  ;; 0: argc, 4: argv size, 16: iovec, 24: nread/nwritten, 32: opened fd,
  ;; 100..: text, 200..: digits, 1024: argv pointers, 2048: argv strings,
  ;; 65536..131072: the data buffer.
  (memory (export "memory") 3)
  (data (i32.const 100) " -> ")
  (data (i32.const 110) ": ")
  (data (i32.const 120) " bytes\n")

  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 16) (local.get $ptr))
    (i32.store (i32.const 20) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 24))))

  (func $strlen (param $ptr i32) (result i32)
    (local $i i32)
    (local.set $i (local.get $ptr))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (i32.load8_u (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.sub (local.get $i) (local.get $ptr)))

  ;; Writes the decimal digits of $n to stdout.
  (func $write_number (param $n i32)
    (local $at i32)
    (local.set $at (i32.const 220))
    (loop $digit
      (local.set $at (i32.sub (local.get $at) (i32.const 1)))
      (i32.store8 (local.get $at) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digit (i32.ne (local.get $n) (i32.const 0))))
    (call $write (i32.const 1) (local.get $at) (i32.sub (i32.const 220) (local.get $at))))

  (func (export "_start")
    (local $in_name i32) (local $in_len i32) (local $out_name i32) (local $out_len i32)
    (local $in i32) (local $out i32) (local $n i32) (local $i i32) (local $c i32) (local $total i32)
    (drop (call $args_sizes_get (i32.const 0) (i32.const 4)))
    (if (i32.lt_u (i32.load (i32.const 0)) (i32.const 3))
      (then (call $proc_exit (i32.const 2))))
    (drop (call $args_get (i32.const 1024) (i32.const 2048)))
    (local.set $in_name (i32.load (i32.const 1028)))
    (local.set $in_len (call $strlen (local.get $in_name)))
    (local.set $out_name (i32.load (i32.const 1032)))
    (local.set $out_len (call $strlen (local.get $out_name)))
    ;; open IN for reading (rights: fd_read = 2)
    (if (call $path_open (i32.const 3) (i32.const 0) (local.get $in_name) (local.get $in_len)
          (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 32))
      (then (call $proc_exit (i32.const 3))))
    (local.set $in (i32.load (i32.const 32)))
    ;; create OUT (O_CREAT | O_TRUNC = 9; rights: fd_write = 64)
    (if (call $path_open (i32.const 4) (i32.const 0) (local.get $out_name) (local.get $out_len)
          (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 32))
      (then (call $proc_exit (i32.const 4))))
    (local.set $out (i32.load (i32.const 32)))
    (block $eof
      (loop $chunk
        (i32.store (i32.const 16) (i32.const 65536))
        (i32.store (i32.const 20) (i32.const 65536))
        (br_if $eof (call $fd_read (local.get $in) (i32.const 16) (i32.const 1) (i32.const 24)))
        (local.set $n (i32.load (i32.const 24)))
        (br_if $eof (i32.eqz (local.get $n)))
        (local.set $i (i32.const 0))
        (block $done
          (loop $byte
            (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
            (local.set $c (i32.load8_u (i32.add (i32.const 65536) (local.get $i))))
            (if (i32.and (i32.ge_u (local.get $c) (i32.const 97)) (i32.le_u (local.get $c) (i32.const 122)))
              (then (i32.store8 (i32.add (i32.const 65536) (local.get $i))
                                (i32.sub (local.get $c) (i32.const 32)))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $byte)))
        (call $write (local.get $out) (i32.const 65536) (local.get $n))
        (local.set $total (i32.add (local.get $total) (local.get $n)))
        (br $chunk)))
    (drop (call $fd_close (local.get $in)))
    (drop (call $fd_close (local.get $out)))
    (call $write (i32.const 1) (local.get $in_name) (local.get $in_len))
    (call $write (i32.const 1) (i32.const 100) (i32.const 4))
    (call $write (i32.const 1) (local.get $out_name) (local.get $out_len))
    (call $write (i32.const 1) (i32.const 110) (i32.const 2))
    (call $write_number (local.get $total))
    (call $write (i32.const 1) (i32.const 120) (i32.const 7))))
