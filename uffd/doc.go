// Package uffd is a typed Go API over userfaultfd(2): open or adopt a uffd,
// negotiate features, register ranges, decode events and resolve faults with
// UFFDIO_COPY/ZEROPAGE/WAKE/POISON.
//
// The kernel side is described in Documentation/admin-guide/mm/userfaultfd.rst
// and ioctl_userfaultfd(2). Errors from the range ioctls are classified where
// they happen (see ErrExist, ErrAgain, ErrGone); every other errno is
// returned wrapped in an *os.SyscallError so errors.Is(err, unix.EXXX) works.
package uffd
