package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/lazycr/lazycr/migrate"
	"github.com/lazycr/lazycr/netfix"
	"github.com/lazycr/lazycr/pageserver"
	"github.com/lazycr/lazycr/restore"

	"github.com/spf13/cobra"
)

type restoreOptions struct {
	dir        string
	lazyFrom   string
	newPID     bool
	pidns      bool
	inheritFds []int
	unixReconn bool
	stats      bool
	trace      string
	detach     bool
	logFile    string
	conn       connFlags
	netPolicy  string
	netIface   string
	waitSource time.Duration
	shellJob   bool
	termios    string
	netnsMove  bool
	statsFile  string
	rec        *statsRecorder // the --stats-file being recorded, or nil
}

func newRestoreCmd(g *globals) *cobra.Command {
	var o restoreOptions
	cmd := &cobra.Command{
		Use:   "restore (-D DIR | --lazy-from HOST:PORT)",
		Short: "Rebuild a process from an image set and resume it",
		Long: `restore rebuilds the process saved in an image set and resumes it, then
prints its pid on stdout and exits; the process runs on as an orphan. (With
--inherit-fd 1 lazycr's stdout becomes the process's own: the pid is printed
on stderr instead, so it never lands in the process's output stream.)

By default the process gets its original PID and TIDs (clone3 with set_tid);
if one is taken restore fails and names it. --new-pid accepts new ones;
--pidns restores a PID namespace's init into a fresh PID namespace.
With --new-pid a program that cached its pid or TIDs (glibc's cached TID in
struct pthread, Node's process.pid, a pid file) still sees the old ones:
only what asks the kernel again (getpid(2), /proc/self) sees the new pid.
Some runtimes fail on that: Python's asyncio ties its running loop to the
pid (a fork guard), so an asyncio program dies with "bound to a different
event loop" after a --new-pid restore. Such a program keeps its pid if it
runs as the init of its own PID namespace (start it with "unshare --pid
--fork", dump it, restore with --pidns), also for a lazy migration on one
host.
Errors name both: "pid OLD (pid NEW on this host)".

Files the process had open must be where they were; a file it mapped must be
the very same file (device, inode, size, modification time). A fd whose peer
was not migrated (a terminal, a shell pipe) can be taken from lazycr's own fd
of that number with --inherit-fd.

A process that ran as a job of an interactive shell (its controlling
terminal the shell's, its own process group, the foreground one while it
ran) comes back as it was only when restore runs from a shell of that same
terminal. --shell-job (as in CRIU) attaches it to the terminal restore runs
on instead, another terminal or host: its stdin must be that terminal, the
shell's. The process joins restore's session, the one exception to keeping
the session: getsid(2) changes, the process group does not (a process that
led its session, started in a terminal of its own, no longer does; one in
the group of a shell without job control is refused). Every fd that
was on its controlling terminal (/dev/pts/N, /dev/tty) is opened on this
one, with its flags. If it was the foreground job it is again, and restore
stays in between the shell and the job until the job exits, then exits with
its status (128+N if signal N killed it); ^Z stops the job and restore, and
fg or bg continue both. The terminal keeps its window size (the job gets a
SIGWINCH if it differs from the dump's) and, with --shell-job-termios auto,
its settings, unless the program had left cooked mode (raw or cbreak like an
editor or less, or no echo): then it gets the settings the program had set,
which the program puts back itself when it exits. dump needs no option for
shell jobs.

A unix socket whose peer was not dumped (a client of a server outside, such
as redis-cli's connection to redis-server --unixsocket, or a server's
connection from a client outside) is refused, naming the peer, unless
--unix-reconnect is given: then a client end (stream, seqpacket or datagram)
connects again to the same path or abstract name, and the server sees a new
connection; a server's accepted end comes back closed by its peer, so the
process drops it and the client, whose connection ended when the original
was killed, connects again to the restored listener. The dump records such a
client end only with no byte in flight either way.

File locks the process held (flock, POSIX, OFD) are taken again before it
runs, without waiting: if another process holds one now, restore fails
naming the lock and its holder (restore again once it let go). With
--lazy-from on the source's own host the POSIX ones pass from the frozen
original to the process here; if another process took one in between, the
source keeps the original stopped rather than let it run without its lock
("kill -CONT PID" lets it run regardless).

A process dumped in another network namespace of this host (ip netns, a
container, PrivateNetwork=) is refused while that namespace still exists,
naming it and the command to restore it there (ip netns exec NAME lazycr
restore ...): restored in lazycr's namespace it would listen on the wrong
network. --netns-change accepts the move; the TCP connections held for the
restore in the old namespace are then released, so their peers see them end
(a reset) instead of waiting forever. A namespace that is gone, an image of
another boot and --lazy-from restore where lazycr runs. Mount, UTS and IPC
namespaces that differ are logged.

Every refusal that depends only on the image and the options (--unix-reconnect,
--shell-job, --inherit-fd, --netns-change) is decided before anything is
built or torn down, so the network lock a dump held for the image's TCP
connections stays and the retry with the option finds the peers waiting.

Restore is atomic: on any failure the half-built process is killed and the
error names the step and the object.

With --lazy-from the image set comes from the source's page server (lazycr
dump --lazy): the process resumes as soon as its skeleton is built, with its
lazy memory registered on userfaultfd, and each page is fetched the moment it
is touched while the rest streams in the background. restore then prints the
pid, serves faults until every page is in, tells the source DONE, prints a
fault-latency summary and exits 0. --trace writes a Chrome/Perfetto trace
(open it in ui.perfetto.dev). --detach returns as soon as the process runs and
leaves the handler in the background, logging to --log-file (default: a
lazycr-restore-PID.log in the temp directory, removed when the migration
succeeds and kept when it fails).

The page server's secret is the --token file or, without --token, the hex
value of the environment variable LAZYCR_TOKEN (dump --lazy prints the
command line that sets it when it made a one-time secret).

Interrupting (SIGINT, Ctrl-C, or SIGTERM) before the process resumed rolls
the restore back: the source releases the original, which runs on. After the
resume the process here is the only running copy and part of its memory is
still on the source, so the first interrupt only says how much is left and
the transfer carries on. A second interrupt within 5s aborts: the process
here is killed outright (never left running on missing memory), and the
source is told, so it keeps the original stopped; restore exits 1.

While pages are still missing, a small keeper process (lazycr, in a session
of its own) holds a second reference to the process's userfaultfd. If this
restore dies (SIGKILL, a crash) before every page is in, the keeper kills the
process and says so on stderr: without a handler its missing memory would
read as zeros, so it is never left running.

After the resume a lost connection is redialled for --reconnect-timeout; a
source that falls silent (network partition, dead host) is noticed after a
third of --reconnect-timeout (at least 2s, at most 10s) and redialled the
same way. If the source is gone for good, the pages still missing are
poisoned: the process dies of SIGBUS when it touches one, never reads zeros.

If nobody listens at HOST:PORT yet, restore says so at once and keeps trying
for --wait-source (5s), then gives up; pass a longer --wait-source when the
target is started before the source.

--stats-file F writes the run's statistics as one JSON object when restore
ends, also on failure (with "error"): durations in milliseconds with the
unit in the key ("total_ms", "fault_p99_ms"), sizes in bytes or 4 KiB pages,
throughput in GB/s (1e9 bytes). With --lazy-from it adds freeze → resume,
the push phase alone (the source may send → the last page in; no dial,
fetch or build) with its bytes and throughput, pages by fault and by push,
the handler's fault latency p50/p90/p99/max and reconnects; with --detach
the background half writes it. Mode 0600, replaced atomically; the schema
is Go package github.com/lazycr/lazycr/stats.`,
		Example: `  lazycr restore -D /tmp/img
  lazycr restore -D /tmp/img --new-pid
  lazycr restore -D /tmp/img --shell-job     # a job of the shell on this terminal
  lazycr restore --lazy-from 10.0.0.2:27000
  lazycr restore --lazy-from 10.0.0.2:27000 --trace faults.json --token /etc/lazycr/token`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			if v := os.Getenv(migrate.KeeperFdEnv); v != "" {
				return runKeeper(g, v)
			}
			// With --detach the background half (re-executed with the same
			// arguments) writes the stats file when it ends.
			if !(o.detach && os.Getenv(detachEnv) == "") {
				command := "restore"
				if o.lazyFrom != "" {
					command = "restore --lazy-from"
				}
				rec, serr := openStats(o.statsFile, command)
				if serr != nil {
					return serr
				}
				defer func() { err = rec.finish(err) }()
				o.rec = rec
			}
			if (o.dir == "") == (o.lazyFrom == "") {
				return usagef("restore needs exactly one of -D DIR or --lazy-from HOST:PORT")
			}
			if o.newPID && o.pidns {
				return usagef("--new-pid and --pidns exclude each other")
			}
			if o.shellJob && o.pidns {
				return usagef("--shell-job and --pidns exclude each other: a job joins lazycr's session")
			}
			if err := o.conn.validate(); err != nil {
				return err
			}
			if _, err := netfix.ParsePolicy(o.netPolicy); err != nil {
				return usagef("--net-policy %q: use rebind, takeover or fail", o.netPolicy)
			}
			if o.waitSource <= 0 {
				return usagef("--wait-source must be positive")
			}
			for _, n := range o.inheritFds {
				if n < 0 {
					return usagef("--inherit-fd %d is not a file descriptor number; run 'lazycr restore --help'", n)
				}
			}
			if o.lazyFrom != "" {
				_, port, err := net.SplitHostPort(o.lazyFrom)
				if err != nil {
					return usagef("--lazy-from %q: want HOST:PORT", o.lazyFrom)
				}
				if n, err := net.LookupPort("tcp", port); err != nil || n == 0 {
					return usagef("--lazy-from %q: %q is not a TCP port; run 'lazycr restore --help'", o.lazyFrom, port)
				}
				if o.netnsMove {
					return usagef("--netns-change and --lazy-from exclude each other: a post-copy restore runs where lazycr runs")
				}
				if o.shellJob && o.detach {
					return usagef("--shell-job and --detach exclude each other: restore stays in between the shell and the job")
				}
				return runLazyRestore(cmd.Context(), g, &o)
			}
			if o.trace != "" || o.detach {
				return usagef("--trace and --detach go with --lazy-from")
			}
			termios, err := restore.ParseTermiosPolicy(o.termios)
			if err != nil {
				return usageError{fmt.Errorf("--shell-job-termios: %w", err)}
			}
			nf, err := migrate.NewNetFixer(o.netOptions(), g.log)
			if err != nil {
				return err
			}
			defer nf.Close()
			warnImageDirWriters(g, o.dir)
			// A job of this terminal's pid is printed by Running; the
			// others' once Resume returned.
			printJob := false
			r, err := restore.Build(cmd.Context(), restore.Options{
				Dir: o.dir, NewPID: o.newPID, PIDNS: o.pidns, InheritFds: o.inheritFds, UnixReconnect: o.unixReconn, Log: g.log,
				Prepare: nf.Prepare, ShellJob: o.shellJob, Termios: termios, NetnsChange: o.netnsMove,
				Running: func(pid int) {
					if printJob {
						// Said once nothing can fail any more, before the
						// job runs and may write to the terminal.
						fmt.Fprintf(o.pidOut(g), "%d\n", pid)
					}
				},
			})
			job := err == nil && r.TerminalJob()
			printJob = job
			if err == nil {
				err = r.Resume()
			}
			if err != nil {
				if uerr := nf.Undo(); uerr != nil {
					g.log.Warn().Err(uerr).Msg("undo network changes")
				}
				return err
			}
			o.rec.setPID(r.PID())
			o.rec.restore(&r.Stats, len(r.Image().Threads))
			if job {
				// The terminal is the job's now: nothing more is said on it
				// until the job is over.
				g.log.Debug().Int("pid", r.PID()).Dur("took", r.Stats.Total).Msg("restored and resumed as a job of this terminal")
			} else {
				for _, c := range nf.Report() {
					g.log.Info().Str("change", c).Msg("netfix")
				}
				g.log.Info().Int("pid", r.PID()).Uint32("image_pid", r.Image().Pid).Int("threads", len(r.Image().Threads)).
					Dur("took", r.Stats.Total).Msg("restored and resumed")
				fmt.Fprintf(o.pidOut(g), "%d\n", r.PID())
				if o.stats {
					printRestoreStats(g.stderr, &r.Stats)
				}
			}
			code := 0
			if r.Foreground() {
				if code, err = r.WaitJob(); err != nil {
					return err
				}
			}
			if job && o.stats {
				printRestoreStats(g.stderr, &r.Stats)
			}
			if code != 0 {
				return exitCodeError(code)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.dir, "images-dir", "D", "", "directory holding the image set")
	f.StringVar(&o.lazyFrom, "lazy-from", "", "post-copy: fetch the image set and pages from the page server at HOST:PORT")
	f.BoolVar(&o.newPID, "new-pid", false, "accept a new PID and new TIDs if the original ones are taken (a pid the program cached stays the old one)")
	f.BoolVar(&o.pidns, "pidns", false, "restore into a fresh PID namespace, with the PIDs the process had in its own namespace")
	f.IntSliceVar(&o.inheritFds, "inherit-fd", nil, "fd N of the restored process is lazycr's own fd N (repeatable)")
	f.BoolVar(&o.unixReconn, "unix-reconnect", false, "a unix socket whose peer was not dumped: connect a client end again to the same name, give a server end back closed by its peer (default: refuse, naming the peer)")
	f.BoolVar(&o.stats, "stats", false, "print per-phase durations when done")
	registerStatsFile(f, &o.statsFile, "fault_p99_ms")
	f.StringVar(&o.trace, "trace", "", "with --lazy-from: write the fault-latency trace (Chrome trace-event JSON) to this file")
	f.BoolVar(&o.detach, "detach", false, "with --lazy-from: return once the process runs; the page handler continues in the background")
	f.StringVar(&o.logFile, "log-file", "", "with --detach: where the background handler logs (default lazycr-restore-PID.log in the temp directory)")
	f.StringVar(&o.netPolicy, "net-policy", "rebind", "a socket whose local address does not exist here: rebind (take this host's source address toward the peer, same port), takeover (add the address here, with a gratuitous ARP) or fail")
	f.StringVar(&o.netIface, "net-iface", "", "with --net-policy takeover: the interface to add addresses to (default: the one toward the peer)")
	f.DurationVar(&o.waitSource, "wait-source", pageserver.DefaultWaitSource, "with --lazy-from: how long to keep trying while nobody listens at HOST:PORT yet (the target may be started before the source)")
	f.BoolVar(&o.shellJob, "shell-job", false, "attach a shell job to this terminal (stdin): it joins restore's session (getsid changes), its terminal fds open on this terminal, and it is the foreground job again while restore waits for it")
	f.BoolVar(&o.netnsMove, "netns-change", false, "restore a process dumped in another network namespace of this host, which still exists, in lazycr's own (default: refuse, naming the namespace and the ip netns exec command to restore it there)")
	f.StringVar(&o.termios, "shell-job-termios", "auto", "the job's terminal settings: auto (the dumped ones if the program had left cooked mode: raw, cbreak, no echo), dump (always the dumped ones) or keep (this terminal's)")
	o.conn.register(f, false)
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

func runLazyRestore(ctx context.Context, g *globals, o *restoreOptions) error {
	if o.detach && os.Getenv(detachEnv) == "" {
		return detachRestore(ctx, g)
	}
	token, err := lazyToken(&o.conn, os.Getenv(tokenEnv))
	if err != nil {
		return err
	}
	host, _, _ := net.SplitHostPort(o.lazyFrom)
	tlsConf, err := o.conn.clientTLS(host)
	if err != nil {
		return err
	}
	var progress *os.File
	if f, ok := g.stderr.(*os.File); ok && isTerminal(f) && !o.detach && !o.shellJob {
		progress = f // a shell job has the terminal to itself
	}
	termios, err := restore.ParseTermiosPolicy(o.termios)
	if err != nil {
		return usageError{fmt.Errorf("--shell-job-termios: %w", err)}
	}
	terminalJob := false // the process is a job of this terminal (BeforeResume)
	opts := migrate.TargetOptions{
		From: o.lazyFrom, Token: token, TLS: tlsConf, ReconnectTimeout: o.conn.reconnectTimeout, WaitSource: o.waitSource,
		NewPID: o.newPID, PIDNS: o.pidns, InheritFds: o.inheritFds, UnixReconnect: o.unixReconn, Trace: o.trace, Log: g.log,
		Net: o.netOptions(), ShellJob: o.shellJob, Termios: termios,
		Resumed: func(pid int) {
			if !terminalJob {
				fmt.Fprintf(o.pidOut(g), "%d\n", pid)
				g.log.Info().Int("pid", pid).Msg("resumed; serving lazy pages")
			}
			detachReady(pid)
		},
		BeforeResume: func(pid int) {
			// Said before the job may own the terminal.
			terminalJob = true
			fmt.Fprintf(o.pidOut(g), "%d\n", pid)
		},
	}
	if progress != nil {
		opts.Progress = progress
	}
	// After the resume an interrupt must not throw the only running copy
	// away: migrate.Target applies the policy (see --help).
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	opts.Interrupts, opts.Notice = sigs, g.stderr
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find lazycr's executable for the keeper: %w", err)
	}
	opts.KeeperCommand, opts.KeeperStderr = []string{exe, "restore"}, g.stderr
	res, err := migrate.Target(ctx, opts)
	o.rec.target(res)
	if err == nil && res.Exited != "" {
		if g.logFormat == "json" {
			g.log.Info().Msgf("%s; the migration is complete", res.Exited)
		} else {
			fmt.Fprintf(g.stderr, "lazycr: %s; the migration is complete\n", res.Exited)
		}
	}
	if res != nil && res.PID != 0 && (res.Job == nil || err != nil) {
		printTargetSummary(g, o, res, err)
	}
	detachDone(err)
	if err == nil && res.Job != nil {
		// The terminal is the job's: the summary waits for its end.
		code, err := res.Job.WaitJob()
		printTargetSummary(g, o, res, err)
		if err != nil {
			return err
		}
		if code != 0 {
			return exitCodeError(code)
		}
	}
	return err
}

// runKeeper is the keeper of a lazy restore (see migrate.RunKeeper): a
// lazycr re-executed by restore --lazy-from with its socket as fd v.
func runKeeper(g *globals, v string) error {
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return fmt.Errorf("%s=%q is not a keeper socket fd", migrate.KeeperFdEnv, v)
	}
	os.Unsetenv(migrate.KeeperFdEnv)
	if err := migrate.RunKeeper(fd, g.stderr); err != nil {
		if !errors.Is(err, migrate.ErrHandlerDied) { // that one is told already
			fmt.Fprintf(g.stderr, "lazycr keeper: %v\n", err)
		}
		return errSilentFailure
	}
	return nil
}

// tokenEnv names the environment variable holding the session secret in
// hex, as printed by `lazycr dump --lazy` when it made a one-time secret
// ("LAZYCR_TOKEN=<hex> lazycr restore --lazy-from HOST:PORT").
const tokenEnv = "LAZYCR_TOKEN"

// lazyToken is the secret to present to the page server: the --token file
// if given (it wins), else env (the value of LAZYCR_TOKEN) hex-decoded, else
// none.
func lazyToken(c *connFlags, env string) ([]byte, error) {
	if c.tokenFile != "" {
		return c.token()
	}
	env = strings.TrimSpace(env)
	if env == "" {
		return nil, nil
	}
	b, err := hex.DecodeString(env)
	if err != nil || len(b) == 0 {
		return nil, usagef("%s is not a hex-encoded secret (as printed by lazycr dump --lazy)", tokenEnv)
	}
	if err := checkTokenStrength(b, "$"+tokenEnv); err != nil {
		return nil, usageError{err}
	}
	return b, nil
}

// warnImageDirWriters warns when someone other than this user could have
// changed the image set: the directory belongs to another user or group
// or others may write it (dump refuses to write into such a directory;
// an image made elsewhere may have been copied into one). The restored
// process gets the credentials the image names, root's included.
func warnImageDirWriters(g *globals, dir string) {
	st, err := os.Stat(dir)
	if err != nil {
		return // restore names the problem
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return
	}
	if int(sys.Uid) != os.Geteuid() || st.Mode().Perm()&0o022 != 0 {
		g.log.Warn().Str("dir", dir).Uint32("owner", sys.Uid).Str("mode", fmt.Sprintf("%#o", st.Mode().Perm())).
			Msgf("image directory %s belongs to uid %d or is writable by others (mode %#o): whoever can write it could have replaced the image, and the process runs with the credentials it names", dir, sys.Uid, st.Mode().Perm())
	}
}

func (o *restoreOptions) netOptions() migrate.NetOptions {
	p, _ := netfix.ParsePolicy(o.netPolicy)
	return migrate.NetOptions{Policy: p, Iface: o.netIface}
}

func printTargetSummary(g *globals, o *restoreOptions, res *migrate.TargetResult, err error) {
	h := res.Handler
	if err == nil {
		g.log.Info().Int("pid", res.PID).Dur("freeze_to_resume", res.FreezeToResume).Dur("total", res.Total).
			Msg("migration complete")
	}
	w := g.stderr
	fmt.Fprintf(w, "freeze to resume   %s\n", res.FreezeToResume.Round(10*1000))
	fmt.Fprintf(w, "%s\n", h.String())
	for _, c := range res.NetChanges {
		fmt.Fprintf(w, "netfix             %s\n", c)
	}
	if o.trace != "" {
		fmt.Fprintf(w, "trace              %s (open in ui.perfetto.dev)\n", o.trace)
	}
	if o.stats {
		printRestoreStats(w, &res.Restore)
	}
}

// pidOut is where restore prints the restored pid: stdout, unless the
// process inherits lazycr's stdout (--inherit-fd 1) — then the pid would
// land in the middle of the process's own output, so it goes to stderr.
func (o *restoreOptions) pidOut(g *globals) io.Writer {
	if slices.Contains(o.inheritFds, 1) {
		return g.stderr
	}
	return g.stdout
}
