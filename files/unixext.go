package files

import (
	"fmt"

	"github.com/lazycr/lazycr/image/pb"
)

// dumpUnixExternal handles a socket connected to a peer that is not in
// the dump: refused, naming the peer (its name, inode and the processes
// holding it).
func (d *dumper) dumpUnixExternal(l *liveFd, diag unixDiag, s *pb.UnixSocket) error {
	pd := d.unixDiag[diag.peer]
	return refuseUnix("socket:[%d] is connected to socket:[%d] on %s%s, which is not the process's",
		l.ino, diag.peer, unixName([]byte(pd.name)), heldBy(diag.peer, d.pid))
}

// makeUnixExternal makes a socket whose peer was not dumped.
func (r *restorer) makeUnixExternal(f *pb.Fd) (uintptr, error) {
	s := f.GetUnixSocket()
	return 0, fmt.Errorf("fd %d: unix socket:[%d] was connected to %s (socket:[%d]), outside the dump", f.Fd, s.Inode, unixName(s.External.Name), s.External.Inode)
}
