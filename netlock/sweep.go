package netlock

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/google/nftables"
	"github.com/rs/zerolog"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/lazycr/lazycr/proc"
)

// Sweep removes, in network namespace ns, the lock tables whose lazycr
// process is gone (no process with that pid and start time), and returns
// their names. Tables bound to a socket (NFT_TABLE_F_OWNER) are left alone:
// the kernel removes them with their socket, so they belong to a live
// process. Only on kernels without owner tables can a lock outlive a killed
// lazycr; calling Sweep before locking cleans up after such a crash. Sweep
// must run in the PID namespace of the lazycr processes that made the
// tables.
//
// Equivalent to: nft delete table inet lazycr_<pid>_… for each dead pid.
func Sweep(ns netns.NsHandle, log zerolog.Logger) (removed []string, err error) {
	if !ns.IsOpen() {
		return nil, fmt.Errorf("sweep lock tables: %w", ErrNoNetns)
	}
	nsName := ns.UniqueId()
	nft, sock, err := dial(ns)
	if err != nil {
		return nil, fmt.Errorf("sweep lock tables in netns %s: %w", nsName, err)
	}
	defer func() {
		if cerr := nft.CloseLasting(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close nftables socket in netns %s: %w", nsName, cerr))
		}
	}()
	tables, err := listTables(sock)
	if err != nil {
		return nil, fmt.Errorf("sweep lock tables in netns %s: %w", nsName, err)
	}
	var errs []error
	for _, t := range tables {
		n, perr := parseTableName(t.name)
		if perr != nil || t.flags&nftTableFOwner != 0 {
			continue
		}
		alive, aerr := processAlive(n.pid, n.start)
		if aerr != nil {
			errs = append(errs, fmt.Errorf("judge table inet %s in netns %s: %w", t.name, nsName, aerr))
			continue
		}
		if alive {
			continue
		}
		nft.DelTable(&nftables.Table{Name: t.name, Family: tableFamily})
		if derr := nft.Flush(); derr != nil && !errors.Is(derr, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete stale table inet %s in netns %s: %w", t.name, nsName, derr))
			continue
		}
		log.Info().Str("table", t.name).Str("netns", nsName).Int("pid", n.pid).Msg("stale network lock removed")
		removed = append(removed, t.name)
	}
	return removed, errors.Join(errs...)
}

// processAlive reports whether process pid exists with start time start.
func processAlive(pid int, start uint64) (bool, error) {
	got, err := proc.ProcessIdentity(pid)
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, unix.ESRCH):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("read start time of pid %d: %w", pid, err)
	}
	return got == start, nil
}
