package main

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/lazycr/lazycr/restore"

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
		Short: "Rebuild a process from an image set and resume it",
		Long: `restore rebuilds the process saved in an image set and resumes it, then
prints its pid on stdout and exits; the process runs on as an orphan.

By default the process gets its original PID and TIDs (clone3 with set_tid);
if one is taken restore fails and names it. --new-pid accepts new ones;
--pidns restores a PID namespace's init into a fresh PID namespace.

Files the process had open must be where they were; a file it mapped must be
the very same file (device, inode, size, modification time). A fd whose peer
was not migrated (a terminal, a shell pipe) can be taken from lazycr's own fd
of that number with --inherit-fd.

Restore is atomic: on any failure the half-built process is killed and the
error names the step and the object. --lazy-from (post-copy) is not
implemented yet.`,
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
			if o.lazyFrom != "" {
				return errors.New("restore --lazy-from (post-copy) is not implemented yet")
			}
			r, err := restore.Restore(cmd.Context(), restore.Options{
				Dir: o.dir, NewPID: o.newPID, PIDNS: o.pidns, InheritFds: o.inheritFds, Log: g.log,
			})
			if err != nil {
				return err
			}
			g.log.Info().Int("pid", r.PID()).Uint32("image_pid", r.Image().Pid).Int("threads", len(r.Image().Threads)).
				Dur("took", r.Stats.Total).Msg("restored and resumed")
			fmt.Fprintf(g.stdout, "%d\n", r.PID())
			if o.stats {
				printRestoreStats(g.stderr, &r.Stats)
			}
			return nil
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

func printRestoreStats(w io.Writer, st *restore.Stats) {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	for _, row := range []struct {
		name string
		v    any
	}{
		{"load images", st.Load}, {"stub start", st.StubStart}, {"address space", st.AddressSpace},
		{"pages", st.Pages}, {"fds", st.Fds}, {"process state", st.State}, {"threads", st.Threads}, {"credentials", st.Creds},
		{"resume", st.Resume}, {"total", st.Total}, {"eager bytes", st.EagerBytes},
	} {
		fmt.Fprintf(tw, "%s\t%v\n", row.name, row.v)
	}
	tw.Flush()
}
