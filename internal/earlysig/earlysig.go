// Package earlysig catches SIGINT and SIGTERM from the moment the program's
// packages initialise, long before main runs: without it, an interrupt in
// the first milliseconds (while protobuf descriptors, cobra and the rest
// initialise) meets Go's default action and kills the process with the
// signal (exit status 130 in a shell) instead of the command's own
// "interrupted" error and exit status 1. See os/signal: "By default, a
// synchronous signal is converted into a run-time panic. A SIGHUP, SIGINT,
// or SIGTERM signal causes the program to exit."
//
// Import it (blank or not) from package main only; it depends on nothing
// but os/signal so that Go initialises it as early as the package
// initialisation order allows.
package earlysig

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// ch receives SIGINT and SIGTERM from init on; a signal that arrived before
// NotifyContext is waiting in its buffer.
var ch = make(chan os.Signal, 1)

func init() {
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
}

// NotifyContext is signal.NotifyContext(parent, os.Interrupt,
// syscall.SIGTERM), except that a signal received before the call, during
// package initialisation, cancels the context too. stop restores the
// default behaviour of the signals and releases the context.
func NotifyContext(parent context.Context) (ctx context.Context, stop context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	go func() {
		select {
		case <-ch:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		cancel()
	}
}
