package kabi

// sigaltstack(2) flags, include/uapi/linux/signal.h (x/sys/unix lacks them).
const (
	SS_ONSTACK = 1 // a state, reported while running on the stack
	SS_DISABLE = 2
)
