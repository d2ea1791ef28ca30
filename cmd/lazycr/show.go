package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math/bits"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lazycr/lazycr/files"
	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/internal/kabi"
	"github.com/lazycr/lazycr/procattr"
	"github.com/lazycr/lazycr/vmattr"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

func newShowCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show DIR",
		Short: "Summarise an image set: process tree, threads, memory, fds, sockets",
		Long: `show reads the image set in DIR, checks it (format version, checksums, sizes,
consistency) and prints a summary for people, or with --json the whole image
set as JSON (protobuf field names; 64-bit integers are strings, as protojson
writes them).

The summary has a table per section: the process tree; each process's
threads (registers, blocked and pending signals, alternate stack, rseq,
seccomp), memory areas, fds (with their file locks) and sockets; shared
memory and what members of a tree share. A thread's BLOCKED column names
its blocked signals, or says "all" (every signal but SIGKILL and SIGSTOP,
which cannot be blocked) or "all but" the few it does not block.`,
		Example: `  lazycr show /tmp/img
  lazycr show --json /tmp/img | jq '.tree.processes[0].threads | length'`,
		Args: exactArgs(1, "exactly one image directory"),
		RunE: func(cmd *cobra.Command, args []string) error {
			set, err := image.LoadDir(args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return writeSetJSON(g.stdout, set)
			}
			return writeSetText(g.stdout, args[0], set)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the image set as JSON")
	return cmd
}

// setJSON is the document `show --json` prints.
type setJSON struct {
	Inventory json.RawMessage            `json:"inventory"`
	Tree      json.RawMessage            `json:"tree"`
	Memory    map[string]json.RawMessage `json:"memory"` // by pid
	Fds       map[string]json.RawMessage `json:"fds"`    // by pid
}

var pjson = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

func writeSetJSON(w io.Writer, s *image.Set) error {
	m := func(msg proto.Message) (json.RawMessage, error) {
		b, err := pjson.Marshal(msg)
		return json.RawMessage(b), err
	}
	var out setJSON
	var err error
	if out.Inventory, err = m(s.Inventory); err != nil {
		return err
	}
	if out.Tree, err = m(s.Tree); err != nil {
		return err
	}
	out.Memory = map[string]json.RawMessage{}
	out.Fds = map[string]json.RawMessage{}
	for pid, mm := range s.Memory {
		if out.Memory[fmt.Sprint(pid)], err = m(mm); err != nil {
			return err
		}
	}
	for pid, fds := range s.Fds {
		if out.Fds[fmt.Sprint(pid)], err = m(fds); err != nil {
			return err
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func writeSetText(w io.Writer, dir string, s *image.Set) error {
	inv := s.Inventory
	mode := "full"
	if inv.Lazy {
		mode = "lazy (skeleton; lazy pages come from the page server)"
	}
	fmt.Fprintf(w, "Image set %s\n", dir)
	fmt.Fprintf(w, "  format %d, written by lazycr %s on %s (%s, kernel %s) at %s\n",
		inv.FormatVersion, inv.LazycrVersion, inv.Hostname, inv.Arch, inv.KernelRelease,
		time.Unix(0, inv.TimeUnixNano).UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "  mode %s, xsave %d bytes\n\n", mode, inv.XsaveSize)

	fmt.Fprintln(w, "Process tree")
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  PID\tNS PIDS\tPPID\tPGID\tSID\tTHREADS\tSTATE\tCOMM\tCWD")
	for _, p := range s.Tree.Processes {
		fmt.Fprintf(tw, "  %d\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", p.Pid, joinU32(p.NsPid), p.Ppid, p.Pgid, p.Sid, len(p.Threads), processState(p), p.Comm, p.Cwd)
	}
	tw.Flush()
	if ns := s.Root().GetNamespaces(); ns != nil {
		net := fmt.Sprintf("net:[%d]", ns.Net)
		if ns.NetName != "" {
			net += " (" + ns.NetName + ")" // restore refuses another namespace while this one exists
		}
		fmt.Fprintf(w, "  namespaces %s mnt:[%d] uts:[%d] ipc:[%d] pid:[%d]\n", net, ns.Mnt, ns.Uts, ns.Ipc, ns.Pid)
	}
	writeTreeSharing(w, s)
	writeSharedMemory(w, s) // show_shm.go

	for _, p := range s.Tree.Processes {
		if p.Zombie {
			continue // nothing left of it but its exit status
		}
		fmt.Fprintf(w, "\nThreads of pid %d\n", p.Pid)
		tw = tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "  TID\tRIP\tRSP\tFS_BASE\tBLOCKED\tPENDING\tALTSTACK\tRSEQ\tSECCOMP")
		for _, t := range p.Threads {
			alt := "-"
			if t.Sigaltstack != nil && t.Sigaltstack.Flags&kabi.SS_DISABLE == 0 && t.Sigaltstack.Size != 0 {
				alt = fmt.Sprintf("%#x+%d", t.Sigaltstack.Sp, t.Sigaltstack.Size)
			}
			rseq := "-"
			if t.Rseq != nil && t.Rseq.Addr != 0 {
				rseq = fmt.Sprintf("%#x", t.Rseq.Addr)
			}
			fmt.Fprintf(tw, "  %d\t%#x\t%#x\t%#x\t%s\t%d\t%s\t%s\t%s\n", t.Tid, t.Regs.GetRip(), t.Regs.GetRsp(), t.Regs.GetFsBase(),
				blockedText(t.Sigmask), len(t.Pending), alt, rseq, seccompText(t))
		}
		tw.Flush()

		var handlers []string
		for _, a := range p.Sigactions {
			if a.Handler > 1 {
				handlers = append(handlers, fmt.Sprintf("%s→%#x", unix.SignalName(unix.Signal(a.Signo)), a.Handler))
			} else if a.Handler == 1 {
				handlers = append(handlers, unix.SignalName(unix.Signal(a.Signo))+"→ignore")
			}
		}
		if len(handlers) > 0 {
			fmt.Fprintf(w, "  signal handlers: %s\n", strings.Join(handlers, ", "))
		}
		if len(p.SharedPending) > 0 {
			fmt.Fprintf(w, "  process-wide pending signals: %d\n", len(p.SharedPending))
		}
		if p.StopSignal != 0 {
			fmt.Fprintf(w, "  stopped (state T) by %s: restored stopped, SIGCONT lets it run\n", unix.SignalName(unix.Signal(p.StopSignal)))
		}
		if a := procattr.Show(p); a != "" {
			fmt.Fprintf(w, "  attributes: %s\n", a)
		}
		if p.LeaderExited {
			fmt.Fprintf(w, "  main thread %d exited (pthread_exit): it exits again on restore, a zombie leader\n", p.Pid)
		}

		if mm := s.Memory[p.Pid]; mm != nil {
			writeMemoryText(w, mm)
		}
		if fds := s.Fds[p.Pid]; fds != nil {
			writeFdsText(w, fds)
		}
	}
	return nil
}

func writeMemoryText(w io.Writer, mm *pb.MemoryMap) {
	fmt.Fprintf(w, "\nMemory of pid %d: %d VMAs, %s of eager page data\n", mm.Pid, len(mm.Vmas), humanBytes(mm.PagesBytes))
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  START\tEND\tSIZE\tPROT\tKIND\tZERO\tEAGER\tLAZY\tFILE\tNAME\tATTRS")
	var total image.PageCounts
	for _, v := range mm.Vmas {
		c := image.CountPages(v)
		total = total.Add(c)
		name := v.Name
		if name == "" {
			name = "-"
		}
		fmt.Fprintf(tw, "  %x\t%x\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", v.Start, v.End, humanBytes(v.End-v.Start), protString(v.Prot, v.Shared),
			kindString(v.Kind), c.Zero, c.Eager, c.Lazy, c.File, name, vmattr.Show(v))
	}
	fmt.Fprintf(tw, "  \t\t\t\ttotal\t%d\t%d\t%d\t%d\t\t\n", total.Zero, total.Eager, total.Lazy, total.File)
	tw.Flush()
	if a := vmattr.ShowMM(mm.Attrs); a != "" {
		fmt.Fprintf(w, "  address space: %s\n", a)
	}
}

func writeFdsText(w io.Writer, t *pb.FdTable) {
	fmt.Fprintf(w, "\nFile descriptors of pid %d\n", t.Pid)
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  FD\tKIND\tFLAGS\tDETAIL")
	var sockets []*pb.Fd
	for _, f := range t.Fds {
		kind, detail := files.Show(f)
		fl := fmt.Sprintf("%#o", f.Flags)
		if f.Cloexec {
			fl += " cloexec"
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\n", f.Fd, kind, fl, detail)
		if f.GetInetSocket() != nil {
			sockets = append(sockets, f)
		}
	}
	tw.Flush()
	if len(sockets) == 0 {
		return
	}
	fmt.Fprintf(w, "\nSockets of pid %d\n", t.Pid)
	tw = tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  FD\tPROTO\tLOCAL\tPEER\tOPTIONS")
	for _, f := range sockets {
		s := f.GetInetSocket()
		peer := "-"
		if s.PeerAddr != "" {
			peer = files.HostPort(s.PeerAddr, s.PeerPort)
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\n", f.Fd, files.SockProto(s), files.HostPort(s.LocalAddr, s.LocalPort), peer, sockOpts(s.Options))
	}
	tw.Flush()
}

func sockOpts(o *pb.SocketOptions) string {
	if o == nil {
		return ""
	}
	var out []string
	if o.Reuseaddr {
		out = append(out, "reuseaddr")
	}
	if o.Reuseport {
		out = append(out, "reuseport")
	}
	if o.Broadcast {
		out = append(out, "broadcast")
	}
	if o.BindToDevice != "" {
		out = append(out, "dev="+o.BindToDevice)
	}
	out = append(out, fmt.Sprintf("sndbuf=%d rcvbuf=%d", o.Sndbuf, o.Rcvbuf))
	return strings.Join(out, " ")
}

func protString(prot uint32, shared bool) string {
	b := []byte("---p")
	if prot&unix.PROT_READ != 0 {
		b[0] = 'r'
	}
	if prot&unix.PROT_WRITE != 0 {
		b[1] = 'w'
	}
	if prot&unix.PROT_EXEC != 0 {
		b[2] = 'x'
	}
	if shared {
		b[3] = 's'
	}
	return string(b)
}

func kindString(k pb.VmaKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "VMA_KIND_"))
}

func joinU32(v []uint32) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ",")
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// blockedText renders a thread's blocked set: "-" for none, the names when
// few are blocked, else "all" or "all but" the few that are not (a thread
// that blocks everything would otherwise print some 60 names). "All" is
// every signal but SIGKILL and SIGSTOP, which cannot be blocked
// (sigprocmask(2)); glibc's sigfillset leaves out its internal signals 32
// and 33, so such a thread shows "all but SIG32,SIG33".
func blockedText(m uint64) string {
	const unblockable = 1<<(unix.SIGKILL-1) | 1<<(unix.SIGSTOP-1)
	if bits.OnesCount64(m) <= 32 {
		return files.Sigset(m)
	}
	missing := ^uint64(unblockable) &^ m
	if missing == 0 {
		return "all"
	}
	return "all but " + files.Sigset(missing)
}
