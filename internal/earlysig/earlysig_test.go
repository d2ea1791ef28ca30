package earlysig

import (
	"context"
	"syscall"
	"testing"
	"time"
)

// TestSignalBeforeNotifyContext: a SIGINT received after init but before
// NotifyContext is not lost (nor fatal): the context comes back cancelled.
func TestSignalBeforeNotifyContext(t *testing.T) {
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	// The signal reaches ch asynchronously; poll with a deadline.
	deadline := time.Now().Add(10 * time.Second)
	for len(ch) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("SIGINT never reached the early channel")
		}
		time.Sleep(time.Millisecond) // poll interval
	}
	ctx, stop := NotifyContext(context.Background())
	defer stop()
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the context is not cancelled by the SIGINT received before NotifyContext")
	}
}
