// Package hosts builds throwaway "hosts" for tests and the demo: named network
// namespaces joined by a Linux bridge that lives in a namespace of its own.
//
// Layout of one [Net] (runid is random, so parallel runs never clash):
//
//	netns <prefix>-<runid>-br           netns <prefix>-<runid>-<name>  (one per host)
//	┌──────────────────────────┐        ┌───────────────────────────┐
//	│ br0 (bridge, up)         │        │ lo (up)                   │
//	│  └─ v-<name> (veth, up) ─┼────────┼─ eth0 (veth, up) Addr/24  │
//	└──────────────────────────┘        └───────────────────────────┘
//
// Every namespace is bind-mounted under /run/netns exactly like
// `ip netns add`, so `ip netns exec <prefix>-<runid>-<name> …` works for a
// human debugging, and a process inside can be found by its namespace name.
// Nothing is created in the caller's own network namespace.
//
// Everything is built with netlink (see rtnetlink(7)), one
// [netlink.Handle] per namespace; no `ip` binary is needed. Switching a thread
// into a namespace (setns(2)) is only ever done on a goroutine locked to an OS
// thread that is then thrown away (the goroutine exits without
// runtime.UnlockOSThread, so the runtime terminates the thread).
//
// Commands run inside a host by re-executing the current binary
// (/proc/self/exe) with a sentinel argv[0]: an init function of this package
// recognises it, enters the host's network namespace (and, with
// [Options.PIDNS], mounts a fresh /proc in the new PID and mount namespace the
// command was cloned into) and execve(2)s the real command, which keeps the
// same PID. Any binary that calls [Host.Command] imports this package, so the
// hook is always present.
//
// Teardown: [Net.Close] deletes every namespace it made (a network namespace
// dies with its last reference, taking its veth ends with it). Callers defer
// Close and stop on SIGINT/SIGTERM through a context
// (signal.NotifyContext) so that the deferred Close runs; commands started
// with [Host.Command] keep their namespace alive until they exit, so stop them
// (cancel their context) before Close.
package hosts
