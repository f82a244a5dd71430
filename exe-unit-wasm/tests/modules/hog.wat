;; hog: grows its memory by 16 MiB at a time until growth fails, then traps.
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $more
      (if (i32.eq (memory.grow (i32.const 256)) (i32.const -1))
        (then unreachable))
      (br $more))))
