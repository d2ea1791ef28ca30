package restore

import (
	"errors"
	"fmt"

	"github.com/lazycr/lazycr/files"
	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/netlock"
	"github.com/lazycr/lazycr/proc"
	"github.com/vishvananda/netns"
)

// ErrOtherNamespace: the process was in a network namespace of this host
// other than lazycr's, which still exists (restore --netns-change accepts
// the move).
var ErrOtherNamespace = errors.New("the process was in another network namespace")

// precheck decides every refusal that depends only on the image set, the
// options and where lazycr runs, before anything is built, locked or torn
// down: a restore refused for a missing option (--unix-reconnect,
// --shell-job, --inherit-fd, --netns-change) leaves the image's held
// network lock where the dump left it, so the retry with the option
// still finds the TCP peers waiting. Each fd kind says what it needs
// (files.CheckNeeds). It returns the network namespace the process leaves
// behind when --netns-change accepted a move (nil otherwise).
func precheck(set *image.Set, opts Options) (*leftNetns, error) {
	root := set.Root()
	if root == nil {
		return nil, nil // Build refuses the set further on
	}
	var left *leftNetns
	if !opts.Lazy {
		// A post-copy restore runs where lazycr runs (documented), as
		// the source host's namespaces mean nothing on the target.
		var err error
		if left, err = checkNamespaces(root, set.Fds[root.Pid], opts); err != nil {
			return nil, err
		}
	}
	var term *files.Terminal
	if opts.ShellJob {
		term = &files.Terminal{} // stands for --shell-job: only its presence counts here
	}
	for _, p := range set.Tree.GetProcesses() {
		err := files.CheckNeeds(set.Fds[p.Pid], files.RestoreOptions{Inherit: opts.InheritFds, HandOver: opts.Lazy,
			Terminal: term, UnixReconnect: opts.UnixReconnect, Ptys: opts.ptys})
		if err != nil {
			return nil, fmt.Errorf("restore pid %d: restore fds: %w", p.Pid, err)
		}
	}
	return left, nil
}

// leftNetns is the network namespace a process restored with
// --netns-change left behind, with the image's held network lock there.
type leftNetns struct {
	path string // /run/netns/NAME or /proc/PID/ns/net
	lock string // FdTable.tcp_lock, "" if none
}

// checkNamespaces refuses a restore on the dumping boot when lazycr is
// not in the process's network namespace and that namespace still exists
// (bind-mounted in /run/netns or held by a process): restored here, the
// process would listen on the wrong network, and its TCP peers would wait
// forever behind the held lock left in the old namespace. A namespace
// that is gone, or another boot's (inodes of another boot mean nothing),
// is no refusal. Mount, UTS and IPC namespaces that differ and still
// exist are logged: what they change is checked where it matters (the
// files by device and inode, System V shm by id).
func checkNamespaces(p *pb.Process, fds *pb.FdTable, opts Options) (*leftNetns, error) {
	here, err := files.BootID()
	if err != nil || fds.GetBootId() == "" || here != fds.GetBootId() {
		return nil, nil
	}
	ns := p.GetNamespaces()
	var left *leftNetns
	for _, k := range []struct {
		kind string
		ino  uint64
	}{{"net", ns.GetNet()}, {"mnt", ns.GetMnt()}, {"uts", ns.GetUts()}, {"ipc", ns.GetIpc()}} {
		if k.ino == 0 {
			continue
		}
		mine, err := proc.NamespaceInode(0, k.kind)
		if err != nil {
			return nil, fmt.Errorf("restore pid %d: read lazycr's %s namespace: %w", p.Pid, k.kind, err)
		}
		if mine == k.ino {
			continue
		}
		name, holder := "", 0
		if k.kind == "net" {
			name = proc.NetnsName(k.ino) // the recorded name may be stale: look again
		}
		if name == "" {
			holder = proc.NamespaceHolder(k.kind, k.ino)
		}
		if name == "" && holder == 0 {
			opts.Log.Warn().Uint32("image_pid", p.Pid).Msgf("the process's %s namespace %s:[%d] is gone: it is restored in lazycr's, %s:[%d]",
				k.kind, k.kind, k.ino, k.kind, mine)
			continue
		}
		where, enter, path := fmt.Sprintf("%s:[%d], held by pid %d", k.kind, k.ino, holder),
			fmt.Sprintf("nsenter --%s=/proc/%d/ns/%s lazycr restore ...", map[string]string{"net": "net", "mnt": "mount", "uts": "uts", "ipc": "ipc"}[k.kind], holder, k.kind),
			fmt.Sprintf("/proc/%d/ns/%s", holder, k.kind)
		if name != "" {
			where, enter, path = fmt.Sprintf("%s (net:[%d])", name, k.ino), fmt.Sprintf("ip netns exec %s lazycr restore ...", name), proc.NetnsDir+"/"+name
		}
		if k.kind != "net" {
			opts.Log.Warn().Uint32("image_pid", p.Pid).Msgf("the process was in %s namespace %s; it is restored in lazycr's, %s:[%d] (to keep it: %s)",
				k.kind, where, k.kind, mine, enter)
			continue
		}
		if !opts.NetnsChange {
			return nil, fmt.Errorf("restore pid %d: %w: network namespace %s, lazycr runs in net:[%d]; run restore there (%s), or pass --netns-change to restore it in lazycr's (its sockets then live on this network; TCP connections held for the restore are reset)",
				p.Pid, ErrOtherNamespace, where, mine, enter)
		}
		opts.Log.Warn().Uint32("image_pid", p.Pid).Msgf("--netns-change: the process was in network namespace %s, it is restored in lazycr's, net:[%d]", where, mine)
		left = &leftNetns{path: path, lock: fds.GetTcpLock()}
	}
	return left, nil
}

// release removes the image's held network lock in the namespace the
// process left (--netns-change), once it runs here: the connections it
// held stay there, and their peers must see them end (a reset) rather
// than wait forever behind the lock.
func (l *leftNetns) release(opts Options) {
	if l == nil || l.lock == "" {
		return
	}
	h, err := netns.GetFromPath(l.path)
	if err != nil {
		opts.Log.Warn().Err(err).Str("table", l.lock).Msgf("open network namespace %s to remove the held network lock", l.path)
		return
	}
	defer h.Close()
	if err := netlock.RemoveHeld(h, l.lock, opts.Log); err != nil {
		opts.Log.Warn().Err(err).Str("table", l.lock).Msgf("remove the held network lock in %s", l.path)
		return
	}
	opts.Log.Warn().Str("table", l.lock).Msgf("the TCP connections held in %s for the restore are lost (--netns-change): their peers are reset", l.path)
}
