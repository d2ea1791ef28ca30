// Package files checkpoints and rebuilds a process's file descriptors: one
// file per fd kind — regular file, character device, terminal (tty.go), anonymous pipe, FIFO,
// memfd, file unlinked while open, eventfd, timerfd, signalfd, epoll,
// inotify, inet socket (UDP, UDP-Lite, listening TCP), established or
// half-closed TCP connection (TCP_REPAIR, tcp.go and tcpfin.go), unix
// socket (pairs unixsock.go, listeners and named sockets unixlisten.go,
// peers outside unixext.go, queued messages unixmsg.go, closed peers
// unixdead.go, take-over on the dumping host unixtake.go), inherited fd —
// each
// holding both halves: reading the fd from /proc and a pidfd_getfd(2)
// copy, its image message, rebuilding it by remote syscalls in the restore
// stub, and its `show` line. What is shared by all kinds lives in dump.go
// and restore.go: fds sharing an open file description (kcmp(2)), status
// flags, signal-driven I/O owners, file locks (flock, POSIX and OFD,
// lock.go: recorded per open file description, re-taken without blocking
// once every fd has its number). Whatever cannot come back exactly is
// refused at dump, naming the fd and the object.
//
// Adding a kind is one file implementing [kind] plus its entry in [kinds],
// and one test.
package files
