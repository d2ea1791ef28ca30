package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lazycr/lazycr/dump"
	"github.com/lazycr/lazycr/files"
	"github.com/lazycr/lazycr/migrate"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
)

type dumpOptions struct {
	pid          int
	dir          string
	leaveRunning bool
	lazy         bool
	address      string
	port         int
	stats        bool
	conn         connFlags
	releaseAddrs bool
	netAddrs     []string
	svcAddrs     []netip.Addr // netAddrs, parsed
	insecure     bool
	adopt        int
	statsFile    string
	dropQueued   bool
}

func newDumpCmd(g *globals) *cobra.Command {
	var o dumpOptions
	cmd := &cobra.Command{
		Use:   "dump --pid PID -D DIR",
		Short: "Freeze a process and write its image set",
		Long: `dump freezes every thread of process PID with ptrace, reads its state (threads,
registers, memory, signals, fds, sockets) and writes an image set to DIR.

By default the process is killed once its image is safely written (it now
lives in the image); --leave-running lets it continue unchanged (a
checkpoint). With --lazy only the skeleton and eager pages are written and the
process stays frozen while lazycr serves the image set and its remaining
pages to the target (lazycr restore --lazy-from HOST:PORT); when the target
reports DONE the frozen original is killed and dump exits 0. -D then keeps a
copy of the skeleton. If the target fails before the process resumed there,
the original is released and keeps running.

Secure by default: without --token, $LAZYCR_TOKEN or TLS, dump --lazy makes a
one-time random secret and prints the exact restore command that carries it
(LAZYCR_TOKEN=<hex> lazycr restore --lazy-from HOST:PORT); serving with no
secret at all needs --insecure.

The original never runs twice: from the freeze on, a SIGSTOP is queued for it,
so if this lazycr dies (SIGKILL) the original stops (state T) instead of
running on. If the target is lost after it resumed the process and does not
reconnect within --reconnect-timeout (or dump is interrupted then), the
original is kept stopped the same way and dump exits 1. In both cases
"lazycr dump --lazy --adopt PID" (with the same -D, or none if none was given)
serves the stopped original again: a target still reconnecting carries on,
and the original is killed when it reports DONE. The session state it needs
(session id, token, lazy page runs) is in -D DIR, or /run/lazycr/pid-PID-START,
written 0600 in a 0700 directory. If the target never resumed the process,
"kill -CONT PID" lets the original run on instead. A state in /run/lazycr
whose process is gone (or whose pid now names another process) is removed by
the next dump --lazy, or by "lazycr unlock --sweep".

A passing state that cannot be restored exactly — unread inotify events, a
TCP listener with connections waiting to be accepted — makes dump let the
process run for a moment and freeze it again, up to 5 times (about 150 ms),
then refuse, naming it. --drop-queued-connections accepts the loss of a
listener's queued connections instead (their clients get a reset, as if
the server had restarted); a lazy migration on one host keeps them (the
target takes the listening socket over with its queue).

A dump that kills a process with TCP connections or listening sockets
leaves a network lock (an nftables table) in its network namespace, so that
its peers see neither a reset nor a refusal until the restore: their packets
and new connections to its listening ports are dropped (and retransmitted)
until "lazycr restore -D DIR" runs there. Restoring elsewhere, or not at
all? "lazycr unlock TABLE" lifts it; the dump names the table.

If anything fails, the process is released exactly as it was, the partial
image directory is removed, and dump exits 1 with the reason.

Some processes need a restore option, never a dump option: a job of an
interactive shell, to come back on another terminal, needs restore
--shell-job; a unix socket whose peer is outside the dump, restore
--unix-reconnect (without it the restore refuses, naming the peer); a pipe
or terminal fd whose other end stays behind, restore --inherit-fd.

File locks (flock, POSIX, OFD) are recorded and taken again by the restore
before the process runs; with --lazy on this host the target takes over
the original's open file descriptions, so flock and OFD locks move with
them, and the original's POSIX locks are released only when the target
asks for the image.

--stats-file F writes the run's statistics as one JSON object when dump
ends, also on failure (with "error"): durations in milliseconds with the
unit in the key ("freeze_ms", "frozen_ms"), sizes in bytes or 4 KiB pages,
throughput in GB/s (1e9 bytes); with --lazy also freeze → resume and the
push phase as the source sees them, and frozen_ms runs until the original
is killed after the target's DONE (the process ran on the target
meanwhile). Mode 0600, replaced atomically; the schema is Go package
github.com/lazycr/lazycr/stats.`,
		Example: `  lazycr dump --pid 1234 -D /tmp/img                  # checkpoint and kill
  lazycr dump --pid 1234 -D /tmp/img --leave-running  # checkpoint, keep running
  lazycr dump --pid 1234 -D /tmp/img --stats
  lazycr dump --lazy --pid 1234 --port 27000           # prints the restore command
  lazycr dump --lazy --pid 1234 --port 27000 --token /etc/lazycr/token
  lazycr dump --lazy --adopt 1234                     # serve a stopped original again`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			command := "dump"
			switch {
			case o.lazy && o.adopt != 0:
				command = "dump --lazy --adopt"
			case o.lazy:
				command = "dump --lazy"
			}
			rec, err := openStats(o.statsFile, command)
			if err != nil {
				return err
			}
			defer func() { err = rec.finish(err) }()
			rec.setPID(max(o.pid, o.adopt))
			if o.adopt != 0 {
				if o.adopt < 0 || !o.lazy {
					return usagef("--adopt PID needs --lazy and a positive process id")
				}
				if o.pid != 0 && o.pid != o.adopt {
					return usagef("--pid %d and --adopt %d exclude each other: they name different processes", o.pid, o.adopt)
				}
				if o.releaseAddrs {
					return usagef("--release-addresses and --adopt exclude each other")
				}
				if len(o.netAddrs) > 0 {
					return usagef("--net-address and --adopt exclude each other: the session's image names its addresses")
				}
				o.pid = o.adopt
			}
			if o.pid <= 0 {
				return usagef("dump needs --pid PID (a positive process id)")
			}
			if err := o.conn.validate(); err != nil {
				return err
			}
			if o.port < 0 || o.port > 65535 {
				return usagef("--port %d is not a TCP port", o.port)
			}
			if o.dir == "" && !o.lazy {
				return usagef("dump needs -D DIR, the directory to write the image set to")
			}
			if o.releaseAddrs && !o.lazy {
				return usagef("--release-addresses goes with --lazy")
			}
			if o.svcAddrs, err = parseServiceAddresses(o.netAddrs); err != nil {
				return err
			}
			if o.leaveRunning && o.lazy {
				return usagef("--leave-running and --lazy exclude each other")
			}
			if o.insecure && !o.lazy {
				return usagef("--insecure needs --lazy")
			}
			if o.insecure && (o.conn.tokenFile != "" || o.conn.tlsCert != "") {
				return usagef("--insecure and --token or TLS exclude each other")
			}
			if o.dropQueued && o.lazy {
				return usagef("--drop-queued-connections goes with a plain dump (-D): --lazy keeps a listener's queue on one host")
			}
			if o.adopt != 0 {
				return runAdopt(cmd, g, &o, rec)
			}
			if o.lazy {
				return runLazyDump(cmd.Context(), g, &o, rec)
			}
			mode := dump.ModeKill
			if o.leaveRunning {
				mode = dump.ModeLeaveRunning
			}
			st, err := dump.Dump(cmd.Context(), dump.Options{
				PID: o.pid, Dir: o.dir, Mode: mode, Version: lazycrVersion(), Log: g.log,
				DropQueuedConnections: o.dropQueued, ServiceAddresses: o.svcAddrs,
			})
			rec.dump(st)
			if err != nil {
				return err
			}
			after := "killed"
			if o.leaveRunning {
				after = "left running"
			}
			g.log.Info().Int("pid", o.pid).Str("dir", o.dir).Int("threads", st.Threads).Int("vmas", st.VMAs).
				Str("written", humanBytes(st.BytesWritten)).Dur("frozen", st.Frozen).Msgf("dumped; process %s", after)
			for _, h := range st.Held {
				warnHeld(g.log, o.dir, h)
			}
			if o.stats {
				printDumpStats(g.stdout, st)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVarP(&o.pid, "pid", "p", 0, "process to dump")
	f.StringVarP(&o.dir, "images-dir", "D", "", "directory to write the image set to (created mode 0700; an existing one must be empty, owned by this user and not writable by group or others)")
	f.BoolVar(&o.leaveRunning, "leave-running", false, "let the process continue after the dump instead of killing it")
	f.BoolVar(&o.lazy, "lazy", false, "post-copy: write the skeleton only and serve the remaining pages to the target")
	o.conn.register(f, true)
	f.BoolVar(&o.releaseAddrs, "release-addresses", false, "with --lazy: after DONE, remove the migrated sockets' local addresses from this host (the target took them over with --net-policy takeover)")
	f.StringSliceVar(&o.netAddrs, "net-address", nil, "an address the process serves at through sockets bound to every address (0.0.0.0, ::), which name none: restore --net-policy takeover moves it with the process and --release-addresses releases it here (repeat or comma-separate for several)")
	f.BoolVar(&o.insecure, "insecure", false, "with --lazy: serve without any secret (no --token, no TLS, none generated): anyone who can reach the port can read the process's memory")
	f.IntVar(&o.adopt, "adopt", 0, "with --lazy: serve again the stopped original PID of a session whose source died or gave up after the target resumed (state in -D DIR, default /run/lazycr/pid-PID-START)")
	f.StringVar(&o.address, "address", "", "with --lazy: address to listen on (default all)")
	f.IntVar(&o.port, "port", 27000, "with --lazy: TCP port to listen on")
	f.BoolVar(&o.dropQueued, "drop-queued-connections", false, "dump a TCP listener even if connections wait in its accept queue: they are dropped and their clients get a reset (without it the dump retries, then refuses)")
	f.BoolVar(&o.stats, "stats", false, "print statistics (threads, VMAs, pages, bytes, freeze and dump time)")
	registerStatsFile(f, &o.statsFile, "frozen_ms")
	return cmd
}

// warnHeld says what the network lock a dump left for the restore keeps
// blocked, and how to lift it: a user who restores elsewhere (or not at
// all) would otherwise find the ports silently black-holed.
func warnHeld(log zerolog.Logger, dir string, h files.HeldLock) {
	var what []string
	if h.Conns > 0 {
		what = append(what, fmt.Sprintf("its %d TCP connections", h.Conns))
	}
	if len(h.Listeners) > 0 {
		what = append(what, "new connections to "+strings.Join(h.Listeners, ", "))
	}
	log.Warn().Str("table", h.Table).Int("conns", h.Conns).Strs("listeners", h.Listeners).
		Msgf("the network lock stays after lazycr exits: %s are held (their packets dropped) in this network namespace until `lazycr restore -D %s` runs here; if the image is not restored here, `lazycr unlock %s` lifts it",
			strings.Join(what, " and "), dir, h.Table)
}

func printDumpStats(w io.Writer, st *dump.Stats) {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "threads\t%d\n", st.Threads)
	fmt.Fprintf(tw, "vmas\t%d\n", st.VMAs)
	fmt.Fprintf(tw, "pages populated\t%d\n", st.PagesPopulated)
	fmt.Fprintf(tw, "pages eager\t%d\n", st.PagesEager)
	fmt.Fprintf(tw, "pages lazy\t%d\n", st.PagesLazy)
	fmt.Fprintf(tw, "pages zero\t%d\n", st.PagesZero)
	fmt.Fprintf(tw, "pages file\t%d\n", st.PagesFile)
	fmt.Fprintf(tw, "bytes written\t%d (%s)\n", st.BytesWritten, humanBytes(st.BytesWritten))
	fmt.Fprintf(tw, "freeze time\t%s\n", st.Freeze)
	fmt.Fprintf(tw, "frozen for\t%s\n", st.Frozen)
	fmt.Fprintf(tw, "dump time\t%s\n", st.Total)
	tw.Flush()
}

func runLazyDump(ctx context.Context, g *globals, o *dumpOptions, rec *statsRecorder) error {
	token, err := lazyToken(&o.conn, os.Getenv(tokenEnv))
	if err != nil {
		return err
	}
	if o.insecure && token != nil {
		return usagef("--insecure and $%s exclude each other", tokenEnv)
	}
	tlsConf, err := o.conn.serverTLS()
	if err != nil {
		return err
	}
	// Only a secret made here is printed: one the user chose ($LAZYCR_TOKEN)
	// may be long-lived and shared, and stdout often ends up in a log.
	made := false
	if token == nil && tlsConf == nil && !o.insecure {
		if token, err = newToken(); err != nil {
			return err
		}
		made = true
	}
	if o.insecure {
		where := "every address"
		if o.address != "" {
			where = o.address
		}
		g.log.Warn().Int("port", o.port).Str("address", where).
			Msg("--insecure: serving the process's memory without a token or TLS: anyone who can reach this port can read it")
	}
	listening := func(addr net.Addr, session uint64) {
		fmt.Fprintf(g.stdout, "serving pid %d on %s; on the target run:\n  %s\n", o.pid, addr, restoreCommand(addr, o, token, made))
		tlsFlags := ""
		if o.conn.tlsCert != "" {
			tlsFlags = " --tls-cert CERT --tls-key KEY --tls-ca CA"
		}
		fmt.Fprintf(g.stdout, "if this lazycr dies, pid %d stays stopped; serve it again with:\n  lazycr dump --lazy --adopt %d%s%s\n"+
			"(or, if the target never resumed it or killed its copy: kill -CONT %d)\n", o.pid, o.pid, adoptDirFlag(o.dir), tlsFlags, o.pid)
	}
	res, err := migrate.Source(ctx, migrate.SourceOptions{
		PID: o.pid, Dir: o.dir, Listen: net.JoinHostPort(o.address, strconv.Itoa(o.port)),
		Token: token, TLS: tlsConf, ReconnectTimeout: o.conn.reconnectTimeout,
		Version: lazycrVersion(), Log: g.log, ReleaseAddresses: o.releaseAddrs, ServiceAddresses: o.svcAddrs, Listening: listening,
	})
	rec.source(res)
	if res != nil {
		s := res.Served
		g.log.Info().Int("pid", o.pid).Uint64("pages_requested", s.RequestPages).Uint64("pages_pushed", s.PushPages).
			Str("bytes", humanBytes(s.RequestBytes+s.PushBytes)).Dur("serving", s.Duration).Dur("total", res.Total).Msg("served")
		if o.stats {
			printDumpStats(g.stdout, &res.Dump)
			fmt.Fprintf(g.stdout, "pages requested\t%d\npages pushed\t%d\nbytes served\t%d\nserving time\t%s\n",
				s.RequestPages, s.PushPages, s.RequestBytes+s.PushBytes, s.Duration)
		}
	}
	if res != nil {
		for _, c := range res.NetChanges {
			g.log.Info().Str("change", c).Msg("released address")
		}
	}
	if err != nil {
		return err
	}
	if res.Served.Exited != "" {
		fmt.Fprintf(g.stdout, "the migrated process exited on the target (%s); the original pid %d was killed\n", res.Served.Exited, o.pid)
	}
	fmt.Fprintf(g.stdout, "migrated pid %d: %d pages on request, %d pushed, %s in %s\n", o.pid,
		res.Served.RequestPages, res.Served.PushPages, humanBytes(res.Served.RequestBytes+res.Served.PushBytes), res.Total.Round(time.Millisecond))
	return nil
}

// newToken makes a one-time session secret (16 random bytes).
func newToken() ([]byte, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("make a session token: %w", err)
	}
	return b, nil
}

// restoreCommand is the command line the target runs: the token travels
// in $LAZYCR_TOKEN (not in /proc/*/cmdline) unless it came from a file. A
// secret lazycr made (made) is printed; one from $LAZYCR_TOKEN is not, the
// command only says that the target needs the same.
func restoreCommand(addr net.Addr, o *dumpOptions, token []byte, made bool) string {
	host := o.address
	if host == "" || net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified() {
		host = "HOST"
		if h, err := os.Hostname(); err == nil && h != "" {
			host = h
		}
		host = advertisedHost(host, lookupHost, net.InterfaceAddrs)
	}
	port := strconv.Itoa(o.port)
	if ta, ok := addr.(*net.TCPAddr); ok {
		port = strconv.Itoa(ta.Port)
	}
	cmd := "lazycr restore --lazy-from " + net.JoinHostPort(host, port)
	switch {
	case o.conn.tokenFile != "":
		cmd += " --token " + o.conn.tokenFile + " # a copy of the file"
	case len(token) > 0 && made:
		cmd = tokenEnv + "=" + hex.EncodeToString(token) + " " + cmd
	case len(token) > 0:
		cmd += " # with $" + tokenEnv + " set to the same secret as here"
	}
	if o.conn.tlsCert != "" {
		cmd += " --tls-cert CERT --tls-key KEY --tls-ca CA"
	}
	return cmd
}

// lookupHost resolves a name for advertisedHost, not waiting long for a
// resolver: /etc/hosts answers at once.
func lookupHost(name string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	return net.DefaultResolver.LookupHost(ctx, name)
}

// advertisedHost is the host the printed restore command names for a
// source listening on every address: the host name, unless it resolves
// only to loopback addresses (many images map it to 127.0.0.1 or
// 127.0.1.1 in /etc/hosts) or not at all, since the target would then dial
// itself; then the first global unicast address of this network
// namespace's interfaces (IPv4 first), if there is one.
func advertisedHost(name string, lookup func(string) ([]string, error), addrs func() ([]net.Addr, error)) string {
	if ips, err := lookup(name); err == nil {
		for _, s := range ips {
			if ip := net.ParseIP(s); ip != nil && !ip.IsLoopback() {
				return name
			}
		}
	}
	as, err := addrs()
	if err != nil {
		return name
	}
	var v6 string
	for _, a := range as {
		n, ok := a.(*net.IPNet)
		if !ok || !n.IP.IsGlobalUnicast() {
			continue
		}
		if n.IP.To4() != nil {
			return n.IP.String()
		}
		if v6 == "" {
			v6 = n.IP.String()
		}
	}
	if v6 != "" {
		return v6
	}
	return name
}

func adoptDirFlag(dir string) string {
	if dir == "" {
		return ""
	}
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	return " -D " + dir
}

// runAdopt serves a stopped original again (migrate.Adopt).
func runAdopt(cmd *cobra.Command, g *globals, o *dumpOptions, rec *statsRecorder) error {
	token, err := lazyToken(&o.conn, os.Getenv(tokenEnv))
	if err != nil {
		return err
	}
	tlsConf, err := o.conn.serverTLS()
	if err != nil {
		return err
	}
	listen := ""
	if f := cmd.Flags(); f.Changed("port") || f.Changed("address") {
		listen = net.JoinHostPort(o.address, strconv.Itoa(o.port))
	}
	res, err := migrate.Adopt(cmd.Context(), migrate.AdoptOptions{
		PID: o.pid, StateDir: o.dir, Listen: listen, Token: token, TLS: tlsConf,
		ReconnectTimeout: o.conn.reconnectTimeout, Log: g.log,
	})
	if res != nil {
		s := res.Served
		rec.serve(s, time.Time{}, 0, 0)
		g.log.Info().Int("pid", o.pid).Uint64("pages_requested", s.RequestPages).Uint64("pages_pushed", s.PushPages).
			Str("bytes", humanBytes(s.RequestBytes+s.PushBytes)).Dur("serving", s.Duration).Msg("served")
	}
	if err != nil {
		return err
	}
	if res.Served.Exited != "" {
		fmt.Fprintf(g.stdout, "the migrated process exited on the target (%s); the original pid %d was killed\n", res.Served.Exited, o.pid)
	}
	fmt.Fprintf(g.stdout, "migrated pid %d (adopted): %d pages on request, %d pushed, %s in %s\n", o.pid,
		res.Served.RequestPages, res.Served.PushPages, humanBytes(res.Served.RequestBytes+res.Served.PushBytes), res.Total.Round(time.Millisecond))
	return nil
}

// parseServiceAddresses parses --net-address values: unicast addresses a
// host can hold and another can take over (not every-address, loopback,
// link-local or multicast).
func parseServiceAddresses(vals []string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, v := range vals {
		a, err := netip.ParseAddr(strings.TrimSpace(v))
		if err != nil {
			return nil, usagef("--net-address %q is not an IP address", v)
		}
		a = a.Unmap()
		if a.IsUnspecified() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsMulticast() || a.Zone() != "" {
			return nil, usagef("--net-address %s: not an address a host can hand over (every-address, loopback, link-local or multicast)", v)
		}
		out = append(out, a)
	}
	return out, nil
}
