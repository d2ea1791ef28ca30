package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/internal/kabi"
)

// writeSharedMemory prints the shared memory objects (anonymous shared
// memory, memfds, deleted tmpfs files, System V segments) and the VMAs of
// each member that map them.
func writeSharedMemory(w io.Writer, s *image.Set) {
	if len(s.Tree.GetShm()) == 0 {
		return
	}
	maps := map[uint32][]string{}
	for _, p := range s.Tree.Processes {
		for _, v := range s.Memory[p.Pid].GetVmas() {
			if v.Shm != 0 {
				maps[v.Shm] = append(maps[v.Shm], fmt.Sprintf("pid %d %x-%x", p.Pid, v.Start, v.End))
			}
		}
	}
	fmt.Fprintln(w, "\nShared memory")
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  ID\tOBJECT\tSIZE\tMODE\tMAPPED BY")
	for _, o := range s.Tree.Shm {
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\n", o.Id, shmObjectText(o), humanBytes(o.Size), shmModeText(o), strings.Join(maps[o.Id], ", "))
	}
	tw.Flush()
}

// shmObjectText names an object as its maps line would, with its seals
// or System V key.
func shmObjectText(o *pb.ShmObject) string {
	var d string
	switch o.Kind {
	case pb.ShmKind_SHM_KIND_ANON:
		d = "anonymous (/dev/zero)"
	case pb.ShmKind_SHM_KIND_MEMFD:
		d = "memfd:" + o.Name
		if o.Seals != 0 {
			d += fmt.Sprintf(" seals %#x", o.Seals)
		}
	case pb.ShmKind_SHM_KIND_DELETED_FILE:
		d = o.Name + " (deleted)"
	case pb.ShmKind_SHM_KIND_SYSV:
		d = fmt.Sprintf("System V shmid %d key %#x", o.SysvId, uint32(o.SysvKey))
	default:
		d = o.Kind.String()
	}
	if o.FdContent {
		d += ", content in the fd image"
	}
	return d
}

func shmModeText(o *pb.ShmObject) string {
	m := fmt.Sprintf("%#o %d:%d", o.Mode&0o777, o.Uid, o.Gid)
	if o.Kind == pb.ShmKind_SHM_KIND_SYSV {
		if o.Mode&kabi.SHM_DEST != 0 {
			m += " removed"
		}
		if o.Mode&kabi.SHM_LOCKED != 0 {
			m += " locked"
		}
	}
	return m
}
