package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/vishvananda/netns"

	"github.com/lazycr/lazycr/migrate"
	"github.com/lazycr/lazycr/netlock"
)

func newUnlockCmd(g *globals) *cobra.Command {
	var (
		pid     int
		nsPath  string
		all     bool
		doSweep bool
	)
	cmd := &cobra.Command{
		Use:   "unlock [TABLE...]",
		Short: "List or remove the network locks a dump left for its restore",
		Long: `A plain dump (lazycr dump -D) of a process with established TCP connections
leaves a held network lock: an nftables table, inet lazycr_hold_<pid>_<start>,
that silently drops the connections' packets so that their peers see no reset
while the process lives only in its image (and new connections' SYNs to its
listeners, which the clients retransmit). lazycr restore removes it once the
connections are live again (and also when the restore fails). A lazy dump
(dump --lazy) holds the same lock from the freeze, so that a killed source
leaves the connections silent and the listeners held off while the original
is kept stopped. An image that
will never be restored keeps its lock until it is removed here; its peers then
see their connections reset.

Without arguments unlock lists the held locks of the network namespace. With
TABLE names, or --all, it removes them. --sweep also removes the lock tables of
lazycr processes that died on a kernel without owner-bound tables (Linux < 5.12),
and the lazy session states (/run/lazycr/pid-PID-START, with their tokens) of
processes that are gone or whose pid was reused; every dump --lazy sweeps these
too. The state of a live original, stopped or not, stays.`,
		Example: `  lazycr unlock                          # list held locks here
  lazycr unlock lazycr_hold_1234_5678     # remove one
  lazycr unlock --all --pid 4321          # every held lock in pid 4321's netns`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if pid != 0 && nsPath != "" {
				return usagef("--pid and --netns exclude each other")
			}
			if all && len(args) > 0 {
				return usagef("--all and table names exclude each other")
			}
			for _, a := range args {
				if !netlock.IsHeldName(a) {
					return usagef("%q is not a held lock table (lazycr_hold_<pid>_<start>); run 'lazycr unlock --help'", a)
				}
			}
			var ns netns.NsHandle
			var err error
			switch {
			case pid != 0:
				ns, err = netns.GetFromPid(pid)
			case nsPath != "":
				ns, err = netns.GetFromPath(nsPath)
			default:
				ns, err = netns.Get()
			}
			if err != nil {
				return fmt.Errorf("open network namespace: %w", err)
			}
			defer ns.Close()
			held, err := netlock.ListHeld(ns)
			if err != nil {
				return err
			}
			if all {
				args = held
			}
			if len(args) == 0 && !doSweep {
				for _, h := range held {
					fmt.Fprintln(g.stdout, h)
				}
				return nil
			}
			var errs []error
			for _, a := range args {
				errs = append(errs, netlock.RemoveHeld(ns, a, g.log))
			}
			if doSweep {
				_, err := netlock.Sweep(ns, g.log)
				errs = append(errs, err)
				_, err = migrate.SweepStates(migrate.StateRoot, g.log)
				errs = append(errs, err)
			}
			return errors.Join(errs...)
		},
	}
	f := cmd.Flags()
	f.IntVar(&pid, "pid", 0, "the network namespace of this process (default: lazycr's)")
	f.StringVar(&nsPath, "netns", "", "the network namespace at this path (/run/netns/NAME, /proc/PID/ns/net)")
	f.BoolVar(&all, "all", false, "remove every held lock of the namespace")
	f.BoolVar(&doSweep, "sweep", false, "also remove the locks of lazycr processes that are gone, and the session states in /run/lazycr of processes that are gone")
	return cmd
}
