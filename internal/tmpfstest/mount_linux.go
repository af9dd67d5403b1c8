package tmpfstest

import "syscall"

func mount(dir, opts string) error { return syscall.Mount("tmpfs", dir, "tmpfs", 0, opts) }

func unmount(dir string) error { return syscall.Unmount(dir, syscall.MNT_DETACH) }
