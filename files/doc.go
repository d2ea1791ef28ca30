// Package files checkpoints and rebuilds a process's file descriptors: one
// file per fd kind (regular file, device, pipe, FIFO, eventfd, timerfd,
// signalfd, epoll, inet socket, inherited fd), each holding both halves —
// reading the fd from /proc and a pidfd_getfd(2) copy, its image message,
// rebuilding it by remote syscalls in the restore stub, and its `show` line.
//
// Adding a kind is one file implementing [kind] plus its entry in [kinds],
// and one test.
package files
