// Package dump freezes a process, reads its state through /proc and injected
// syscalls, chooses which pages are eager and which lazy, and writes the
// image set (or hands the frozen process to the page server).
package dump
