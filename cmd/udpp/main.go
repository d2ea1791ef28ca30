// Command udpp is the UDP ping-pong program of the migration demo (see
// package udpp for its output format). udpp/udpp.c is the same program in C.
//
//	udpp server PORT
//	udpp client SERVER PORT [--local-port P] [--interval D] [--no-connect] [--count N]
//
// Exit codes: 0 success (also on SIGINT/SIGTERM), 1 runtime error, 2 usage.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/lazycr/lazycr/udpp"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	code := udpp.Main(ctx, os.Args[1:], os.Stdout, os.Stderr, usr1)
	stop()
	os.Exit(code)
}
