package proc

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// NetnsDir is where ip-netns(8) bind-mounts the network namespaces it
// names ("ip netns add NAME" makes /run/netns/NAME).
const NetnsDir = "/run/netns"

// NamespaceInode is the inode of namespace kind ("net", "mnt", "uts",
// "ipc", ...) of pid (0: lazycr itself), as in the link
// /proc/PID/ns/KIND -> KIND:[INODE] (namespaces(7)).
func NamespaceInode(pid int, kind string) (uint64, error) {
	who := "self"
	if pid != 0 {
		who = strconv.Itoa(pid)
	}
	var st unix.Stat_t
	path := fmt.Sprintf("/proc/%s/ns/%s", who, kind)
	if err := unix.Stat(path, &st); err != nil {
		return 0, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return st.Ino, nil
}

// NetnsName is the name under [NetnsDir] bind-mounting the network
// namespace with inode ino, or "" if none does.
func NetnsName(ino uint64) string {
	ents, err := os.ReadDir(NetnsDir)
	if err != nil {
		return ""
	}
	for _, e := range ents {
		var st unix.Stat_t
		if unix.Stat(filepath.Join(NetnsDir, e.Name()), &st) == nil && st.Ino == ino && ino != 0 {
			return e.Name()
		}
	}
	return ""
}

// NamespaceHolder is a process of this host in namespace kind with inode
// ino (the first found under /proc), or 0 if no process is in it: then
// the namespace lives on only if something else pins it (a bind mount,
// an open fd), which NetnsName finds for the named network namespaces.
func NamespaceHolder(kind string, ino uint64) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		if got, err := NamespaceInode(pid, kind); err == nil && got == ino {
			return pid
		}
	}
	return 0
}
