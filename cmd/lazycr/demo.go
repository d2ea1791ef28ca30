package main

import (
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/lazycr/lazycr/demo"
	"github.com/lazycr/lazycr/udpp"
	"github.com/spf13/cobra"
)

func newDemoCmd(g *globals) *cobra.Command {
	var o demo.Options
	var statsFile string
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Migrate a UDP ping-pong client between three namespace hosts and tell the story",
		Long: `demo builds three hosts as network namespaces joined by a bridge — A runs a UDP
ping-pong server, B the client — lets a few pings go, migrates the client from
B to C post-copy (lazycr dump --lazy inside B, lazycr restore --lazy-from
inside C), and prints what happened: the server's log around the switch (the
sender address changing from B to C with the sequence unbroken, or staying
B's with --policy takeover), the client's own counters, the freeze-to-resume
time, the fault-latency summary and where the trace file is. It removes the
hosts and processes it made, Ctrl-C included, and keeps its logs.

Both lazycr runs write --stats-file (source-stats.json, target-stats.json in
the work directory); the demo reads its numbers from there. --stats-file F
writes one JSON object holding both sides' sections and the client's own
counters ("demo"), in the units of dump/restore --stats-file (milliseconds
with the unit in the key), also on failure (with "error").

Needs root.`,
		Example: `  sudo lazycr demo
  sudo lazycr demo --policy takeover
  sudo lazycr demo --udpp c --work-dir /tmp/demo`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			rec, err := openStats(statsFile, "demo")
			if err != nil {
				return err
			}
			defer func() { err = rec.finish(err) }()
			if o.Policy != "rebind" && o.Policy != "takeover" {
				return usagef("--policy %q: use rebind or takeover", o.Policy)
			}
			if o.UDPP != "go" && o.UDPP != "c" {
				return usagef("--udpp %q: use go or c", o.UDPP)
			}
			o.Out = g.stdout
			o.Log = g.log
			res, err := demo.Run(cmd.Context(), o)
			rec.demo(res)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Policy, "policy", "rebind", "how the target handles B's address: rebind (the client takes C's address) or takeover (C takes B's address)")
	f.StringVar(&o.UDPP, "udpp", "go", "the ping-pong program: go (multi-threaded Go runtime) or c (single-threaded, built with gcc)")
	f.IntVar(&o.Before, "before", 5, "pongs to see before migrating")
	f.IntVar(&o.After, "after", 10, "pongs to see after migrating")
	f.DurationVar(&o.Interval, "interval", 100*time.Millisecond, "ping interval")
	f.StringVar(&o.WorkDir, "work-dir", "", "where logs and the fault trace go (default: a new temporary directory)")
	f.IntVar(&o.Port, "port", 27000, "page server port on B")
	registerStatsFile(f, &statsFile, "freeze_to_first_pong_ms")
	return cmd
}

// newUdppCmd is the hidden `lazycr udpp`: the UDP ping-pong program of the
// demo, built in so the demo needs no second binary.
func newUdppCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:                "udpp",
		Short:              "The demo's UDP ping-pong program (udpp server PORT | udpp client SERVER PORT)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			usr1 := make(chan os.Signal, 1)
			signal.Notify(usr1, syscall.SIGUSR1)
			defer signal.Stop(usr1)
			switch code := udpp.Main(ctx, args, g.stdout, g.stderr, usr1); code {
			case 0:
				return nil
			case 2:
				return usageError{errSilentFailure}
			default:
				return errSilentFailure
			}
		},
	}
}
