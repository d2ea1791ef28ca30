package files

import (
	"fmt"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// Unix sockets whose peer was not dumped: the client end of a connection
// to a server outside (redis-cli's to redis-server --unixsocket, a
// service's to journald), a datagram socket connected to a bound one
// outside, or a server's accepted end whose client is outside. Such a
// connection cannot come back as it was: its other end is another
// process's. The dump records it with the peer named (its name, inode and
// the processes holding it) and restore refuses it unless told
// (RestoreOptions.UnixReconnect, `restore --unix-reconnect`):
//
//   - a client end (stream, seqpacket or datagram) connects again to the
//     same name: the server sees a new connection. It is recorded only if
//     no byte was in flight either way and it was not shut down, so
//     nothing is lost between the two connections (a request whose reply
//     had not been written yet is the protocol's to retry);
//   - a server's accepted end comes back as a connection its peer has
//     closed (the process reads EOF and drops it, as when a client goes
//     away) and the client, which sees its connection end when the
//     original is killed, connects again to the restored listener.
//
// A post-copy restore on the dumping host needs neither: it takes the
// socket over from the frozen original (unixtake.go), so the connection
// itself goes on, the peer sees nothing. A peer without a name (one end of
// a socketpair(2) given to another process) and a bound client are
// refused at dump: there is nothing to reconnect to.

// dumpUnixExternal records (or refuses) a socket whose peer diag.peer is
// not in the dump.
func (d *dumper) dumpUnixExternal(l *liveFd, diag unixDiag, s *pb.UnixSocket) error {
	pd := d.unixDiag[diag.peer]
	ext := &pb.UnixExternalPeer{Inode: diag.peer, Pids: socketHolders(diag.peer, d.pid)}
	held := holdersText(ext.Pids)
	what := fmt.Sprintf("socket:[%d] is connected to socket:[%d] on %s%s, which is not the process's", l.ino, diag.peer, unixName([]byte(pd.name)), held)
	switch {
	case s.Type == unix.SOCK_DGRAM:
		if !pd.named {
			return refuseUnix("%s, and it has no name to connect to again", what)
		}
		ext.Name = []byte(pd.name)
	case diag.named:
		ln, ok := d.unixListenerIn(diag)
		if !ok {
			return refuseUnix("socket:[%d] is bound to %s and connected to socket:[%d]%s, which is not the process's (a bound client)", l.ino, unixName(s.Name), diag.peer, held)
		}
		// The server end of a client outside.
		s.Listener, s.Accepted = ln, true
		ext.Name = []byte(pd.name)
	case pd.named:
		if err := d.reconnectable(l.ino, diag, what); err != nil {
			return err
		}
		ext.Name = []byte(pd.name)
	default:
		return refuseUnix("%s, and it has no name to connect to again (a socket pair shared with another process)", what)
	}
	s.External = ext
	d.opts.Log.Warn().Int("fd", l.num).Uint64("socket", l.ino).Uint64("peer", diag.peer).Ints32("peer_pids", ext.Pids).
		Msgf("fd %d: unix socket connected to %s outside the dump: restore needs --unix-reconnect", l.num, unixName(ext.Name))
	return nil
}

// reconnectable refuses a client end that cannot be connected again
// without a loss: bytes waiting either way, or a shutdown.
func (d *dumper) reconnectable(ino uint64, diag unixDiag, what string) error {
	if diag.shutdown != 0 {
		return refuseUnix("%s, and it is shut down (%d)", what, diag.shutdown)
	}
	if diag.rqueue > 0 || diag.wqueue > 0 {
		return fmt.Errorf("%w: %w: fd kind unix socket: %s, and bytes are in flight on it (%d to read, %d not yet read by the peer)",
			ErrUnsupported, ErrTransient, what, diag.rqueue, diag.wqueue)
	}
	return nil
}

// unixListenerIn finds the dump's listener a socket named as diag says was
// accepted from (unixListenerOf, without refusing).
func (d *dumper) unixListenerIn(diag unixDiag) (uint64, bool) {
	for ln, u := range d.unixDiag {
		if u.listening() && u.name == diag.name && u.vfsIno == diag.vfsIno && u.vfsDev == diag.vfsDev && (d.holdsSocket(ln) || d.opts.TreeSockets[ln]) {
			return ln, true
		}
	}
	return 0, false
}

// pendingFromOutside records a connection waiting in listener l's queue
// from client socket c outside the dump: only with nothing sent yet (its
// bytes would wait in the queued socket, which has no fd).
func (d *dumper) pendingFromOutside(l *liveFd, c uint64, s *pb.UnixSocket, what string) error {
	pids := socketHolders(c, d.pid)
	if cd := d.unixDiag[c]; cd.wqueue > 0 {
		return fmt.Errorf("%w: %w: fd kind unix socket: %s from socket:[%d]%s, which is not the process's, with data already sent",
			ErrUnsupported, ErrTransient, what, c, holdersText(pids))
	}
	s.PendingExternal = append(s.PendingExternal, &pb.UnixExternalPeer{Inode: c, Pids: pids})
	d.opts.Log.Warn().Int("fd", l.num).Uint64("socket", l.ino).Uint64("client", c).Ints32("client_pids", pids).
		Msgf("fd %d: a connection from outside the dump waits to be accepted on %s: restore needs --unix-reconnect (it is dropped; the client connects again)", l.num, unixName(s.Name))
	return nil
}

// dumpUnixPendingExternal records the client end of a connection waiting
// in the queue of listener ln, which is not in the dump.
func (d *dumper) dumpUnixPendingExternal(l *liveFd, diag unixDiag, s *pb.UnixSocket, ln uint64) error {
	pids := socketHolders(ln, d.pid)
	what := fmt.Sprintf("socket:[%d] waits to be accepted by listener socket:[%d] on %s%s, which is not the process's",
		l.ino, ln, unixName([]byte(d.unixDiag[ln].name)), holdersText(pids))
	if err := d.reconnectable(l.ino, diag, what); err != nil {
		return err
	}
	s.External = &pb.UnixExternalPeer{Name: []byte(d.unixDiag[ln].name), Inode: ln, Pids: pids}
	d.opts.Log.Warn().Int("fd", l.num).Uint64("socket", l.ino).Uint64("listener", ln).
		Msgf("fd %d: unix socket waiting to be accepted on %s outside the dump: restore needs --unix-reconnect", l.num, unixName(s.External.Name))
	return nil
}

// dropPendingExternal checks the connections from outside that waited in
// listener lf's queue: refused without --unix-reconnect, else dropped (the
// client's connection ended with the original; it connects again).
func (r *restorer) dropPendingExternal(lf *pb.Fd) error {
	ls := lf.GetUnixSocket()
	if len(ls.PendingExternal) == 0 {
		return nil
	}
	c := ls.PendingExternal[0]
	if !r.unixReconnect {
		return fmt.Errorf("fd %d: %d connections from outside the dump waited to be accepted on %s (the first from socket:[%d], held by pids %v at dump): pass --unix-reconnect to drop them (the clients connect again)",
			lf.Fd, len(ls.PendingExternal), unixName(ls.Name), c.Inode, c.Pids)
	}
	r.log.Info().Int32("fd", lf.Fd).Int("connections", len(ls.PendingExternal)).
		Msgf("fd %d: %d connections from outside the dump that waited on %s are dropped", lf.Fd, len(ls.PendingExternal), unixName(ls.Name))
	return nil
}

// makeUnixExternal makes a socket whose peer was not dumped: refused
// without RestoreOptions.UnixReconnect; with it a client end connects
// again to the peer's name and a server end comes back closed by its
// peer.
func (r *restorer) makeUnixExternal(f *pb.Fd) (uintptr, error) {
	s := f.GetUnixSocket()
	ext := s.External
	// A lazy migration on the dumping host keeps the very connection:
	// its socket is taken over from the frozen original (unixtake.go).
	if fd, took, err := r.takeUnix(f, s.Name); took || err != nil {
		if took {
			r.unixState().made[s.Inode], r.unixState().taken[s.Inode] = fd, true
		}
		return fd, err
	}
	if !r.unixReconnect {
		if s.Accepted {
			return 0, fmt.Errorf("fd %d: unix socket:[%d] was accepted on %s from a client, socket:[%d] (held by pids %v at dump), which was not dumped: pass --unix-reconnect to restore it closed by its peer (the client connects again)",
				f.Fd, s.Inode, unixName(s.Name), ext.Inode, ext.Pids)
		}
		return 0, fmt.Errorf("fd %d: unix socket:[%d] was connected to %s (socket:[%d], held by pids %v at dump), which was not dumped: pass --unix-reconnect to connect it again to %s",
			f.Fd, s.Inode, unixName(ext.Name), ext.Inode, ext.Pids, unixName(ext.Name))
	}
	u := r.unixState()
	if s.Accepted {
		addr, err := r.rem.Put(scratchArgs, make([]byte, 8))
		if err != nil {
			return 0, err
		}
		if _, err := r.rem.Syscall(unix.SYS_SOCKETPAIR, unix.AF_UNIX, uintptr(s.Type)|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0, addr); err != nil {
			return 0, fmt.Errorf("create unix socket fd %d: %w", f.Fd, err)
		}
		a, b, err := r.pair()
		if err != nil {
			return 0, err
		}
		r.closeRemote(b) // the client's end: gone, as the client's connection is
		fd, err := r.moveHigh(a)
		if err != nil {
			return 0, fmt.Errorf("create unix socket fd %d: %w", f.Fd, err)
		}
		u.made[s.Inode] = fd
		local, err := r.getfd(fd)
		if err != nil {
			return 0, fmt.Errorf("unix socket fd %d: %w", f.Fd, err)
		}
		defer unix.Close(local)
		if err := setUnixOpts(local, f.Fd, s); err != nil {
			return 0, err
		}
		r.log.Info().Int32("fd", f.Fd).Uint64("peer", ext.Inode).Ints32("peer_pids", ext.Pids).
			Msgf("fd %d: the connection accepted on %s from a client outside the dump comes back closed by its peer", f.Fd, unixName(s.Name))
		return fd, nil
	}
	fd, err := r.newUnixSocket(f.Fd, s.Type)
	if err != nil {
		return 0, err
	}
	u.made[s.Inode] = fd
	if len(s.Name) > 0 {
		if err := r.bindUnix(fd, f); err != nil {
			return 0, err
		}
	}
	if err := r.connectUnix(fd, f.Fd, ext.Name); err != nil {
		return 0, fmt.Errorf("%w (--unix-reconnect)", err)
	}
	if err := r.unixOpts(fd, f); err != nil {
		return 0, err
	}
	r.log.Info().Int32("fd", f.Fd).Uint64("socket", s.Inode).Msgf("fd %d: connected again to %s", f.Fd, unixName(ext.Name))
	return fd, nil
}
