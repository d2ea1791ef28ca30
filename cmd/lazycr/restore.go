package main

import (
	"errors"

	"github.com/spf13/cobra"
)

type restoreOptions struct {
	dir        string
	lazyFrom   string
	newPID     bool
	pidns      bool
	inheritFds []int
	stats      bool
}

func newRestoreCmd(g *globals) *cobra.Command {
	var o restoreOptions
	cmd := &cobra.Command{
		Use:   "restore (-D DIR | --lazy-from HOST:PORT)",
		Short: "Rebuild a process from an image set and resume it (not implemented yet)",
		Long: `restore rebuilds the process saved in an image set and resumes it.

Not implemented yet: the flags are parsed and checked, then restore exits 1.`,
		Example: `  lazycr restore -D /tmp/img
  lazycr restore -D /tmp/img --new-pid
  lazycr restore --lazy-from 10.0.0.2:27000`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if (o.dir == "") == (o.lazyFrom == "") {
				return usagef("restore needs exactly one of -D DIR or --lazy-from HOST:PORT")
			}
			if o.newPID && o.pidns {
				return usagef("--new-pid and --pidns exclude each other")
			}
			return errors.New("restore is not implemented yet")
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.dir, "images-dir", "D", "", "directory holding the image set")
	f.StringVar(&o.lazyFrom, "lazy-from", "", "post-copy: fetch the image set and pages from the page server at HOST:PORT")
	f.BoolVar(&o.newPID, "new-pid", false, "accept a new PID and new TIDs if the original ones are taken")
	f.BoolVar(&o.pidns, "pidns", false, "restore into a fresh PID namespace, with the PIDs the process had in its own namespace")
	f.IntSliceVar(&o.inheritFds, "inherit-fd", nil, "fd N of the restored process is lazycr's own fd N (repeatable)")
	f.BoolVar(&o.stats, "stats", false, "print per-phase durations when done")
	return cmd
}
