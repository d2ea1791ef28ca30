package netlock

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/rs/zerolog"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// A held lock is a lock handed from one lazycr process to another: `dump`
// takes it for the connections of a process it kills, and the `restore`
// that re-creates their sockets removes it. It is a table like any lock
// (see the package doc) but without NFT_TABLE_F_OWNER, because it must
// outlive the dump process, and named after the dumped process
// (lazycr_hold_<pid>_<starttime>), so that the image names it and [Sweep]
// never takes it for a crashed lazycr's. Nothing removes it by itself: a
// restore removes it ([RemoveHeld]), and `lazycr unlock` lists and removes
// the held locks of an image that will never be restored.

// heldPrefix starts the name of every held lock table.
const heldPrefix = TablePrefix + "hold_"

// ErrNotHeld reports a name that is not a held lock's.
var ErrNotHeld = errors.New("not a held lock table")

// HeldName is the name of the held lock of the process pid with start time
// start (field 22 of /proc/PID/stat).
func HeldName(pid int, start uint64) string {
	return heldPrefix + strconv.Itoa(pid) + "_" + strconv.FormatUint(start, 10)
}

// IsHeldName reports whether name is one HeldName makes.
func IsHeldName(name string) bool {
	rest, ok := strings.CutPrefix(name, heldPrefix)
	if !ok {
		return false
	}
	f := strings.Split(rest, "_")
	if len(f) != 2 {
		return false
	}
	for _, x := range f {
		if x == "" || (len(x) > 1 && x[0] == '0') {
			return false
		}
		if _, err := strconv.ParseUint(x, 10, 64); err != nil {
			return false
		}
	}
	return true
}

// Hold installs the held lock name for conns in ns and returns with the
// table in place and no socket of lazycr bound to it: it stays until
// [RemoveHeld]. A held lock of that name already there is an error (EEXIST).
//
// Equivalent to `nft -f` of the table in the package doc, without `flags
// owner`.
func Hold(ns netns.NsHandle, name string, conns []Conn, log zerolog.Logger) error {
	return HoldWith(ns, name, conns, nil, log)
}

// HoldWith is Hold for connections and listeners (see [Listener]): the held
// lock also drops new connections' SYNs to listeners until [RemoveHeld].
func HoldWith(ns netns.NsHandle, name string, conns []Conn, listeners []Listener, log zerolog.Logger) error {
	if !IsHeldName(name) {
		return fmt.Errorf("hold %d connections as table inet %s: %w", len(conns), name, ErrNotHeld)
	}
	if !ns.IsOpen() {
		return fmt.Errorf("hold %d connections: %w", len(conns), ErrNoNetns)
	}
	k, err := lockKeysOf(conns, listeners)
	if err != nil {
		return fmt.Errorf("hold %d connections and %d listeners in netns %s: %w", len(conns), len(listeners), ns.UniqueId(), err)
	}
	nft, err := install(ns, name, false, k)
	if err != nil {
		return fmt.Errorf("hold %d connections and %d listeners in netns %s: install table inet %s: %w", k.conns(), k.listeners(), ns.UniqueId(), name, err)
	}
	if err := nft.CloseLasting(); err != nil {
		return fmt.Errorf("close nftables socket of table inet %s: %w", name, err)
	}
	log.Info().Str("table", name).Str("netns", ns.UniqueId()).Int("conns", k.conns()).Int("listeners", k.listeners()).Msg("network lock held for a restore")
	return nil
}

// RemoveHeld deletes the held lock name in ns; a lock that is not there is
// success.
//
// Equivalent to: nft delete table inet <name>
func RemoveHeld(ns netns.NsHandle, name string, log zerolog.Logger) (err error) {
	if !IsHeldName(name) {
		return fmt.Errorf("remove table inet %s: %w", name, ErrNotHeld)
	}
	if !ns.IsOpen() {
		return fmt.Errorf("remove table inet %s: %w", name, ErrNoNetns)
	}
	nft, _, err := dial(ns)
	if err != nil {
		return fmt.Errorf("remove table inet %s in netns %s: %w", name, ns.UniqueId(), err)
	}
	defer func() {
		if cerr := nft.CloseLasting(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close nftables socket in netns %s: %w", ns.UniqueId(), cerr))
		}
	}()
	nft.DelTable(&nftables.Table{Name: name, Family: tableFamily})
	switch err := nft.Flush(); {
	case errors.Is(err, unix.ENOENT):
		return nil
	case err != nil:
		return fmt.Errorf("remove table inet %s in netns %s: %w", name, ns.UniqueId(), err)
	}
	log.Info().Str("table", name).Str("netns", ns.UniqueId()).Msg("held network lock removed")
	return nil
}

// ListHeld names the held locks in ns.
//
// Equivalent to: nft list tables inet | grep lazycr_hold_
func ListHeld(ns netns.NsHandle) (_ []string, err error) {
	if !ns.IsOpen() {
		return nil, fmt.Errorf("list held locks: %w", ErrNoNetns)
	}
	nft, sock, err := dial(ns)
	if err != nil {
		return nil, fmt.Errorf("list held locks in netns %s: %w", ns.UniqueId(), err)
	}
	defer func() {
		if cerr := nft.CloseLasting(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close nftables socket in netns %s: %w", ns.UniqueId(), cerr))
		}
	}()
	tables, err := listTables(sock)
	if err != nil {
		return nil, fmt.Errorf("list held locks in netns %s: %w", ns.UniqueId(), err)
	}
	var out []string
	for _, t := range tables {
		if IsHeldName(t.name) {
			out = append(out, t.name)
		}
	}
	return out, nil
}

// UnholdListeners ends the listener half of the held lock name in ns: the
// listeners it holds off serve new connections again (their SYNs pass),
// here or after a takeover of the very socket on this host. A held lock
// that holds no connection is removed whole (as [RemoveHeld]); one that
// does keeps holding them, its listener sets emptied. A lock that is not
// there, or holds no listener, is success.
//
// Equivalent to: nft delete table inet <name>, or, with connections,
// nft flush set inet <name> listen4 (and listen6, lports4, lports6).
func UnholdListeners(ns netns.NsHandle, name string, log zerolog.Logger) (err error) {
	if !IsHeldName(name) {
		return fmt.Errorf("unhold listeners of table inet %s: %w", name, ErrNotHeld)
	}
	if !ns.IsOpen() {
		return fmt.Errorf("unhold listeners of table inet %s: %w", name, ErrNoNetns)
	}
	nft, sock, err := dial(ns)
	if err != nil {
		return fmt.Errorf("unhold listeners of table inet %s in netns %s: %w", name, ns.UniqueId(), err)
	}
	defer func() {
		if cerr := nft.CloseLasting(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close nftables socket in netns %s: %w", ns.UniqueId(), cerr))
		}
	}()
	// The library reports GetSets' errno as text only (google/nftables
	// v0.3.0 set.go formats it with %v): a missing table is found by
	// listing the tables first.
	tables, err := listTables(sock)
	if err != nil {
		return fmt.Errorf("unhold listeners of table inet %s in netns %s: %w", name, ns.UniqueId(), err)
	}
	if !slices.ContainsFunc(tables, func(t tableInfo) bool { return t.name == name }) {
		return nil
	}
	table := &nftables.Table{Name: name, Family: tableFamily}
	sets, err := nft.GetSets(table)
	if err != nil {
		return fmt.Errorf("list sets of table inet %s in netns %s: %w", name, ns.UniqueId(), err)
	}
	conns := false
	var listen []*nftables.Set
	for _, s := range sets {
		switch s.Name {
		case set4, set6:
			conns = true
		case setListen4, setListen6, setPorts4, setPorts6:
			listen = append(listen, s)
		}
	}
	if len(listen) == 0 {
		return nil
	}
	what := "held network lock removed (it held listeners only)"
	if conns {
		what = "held network lock's listeners released (its connections stay held)"
		for _, s := range listen {
			nft.FlushSet(&nftables.Set{Table: table, Name: s.Name})
		}
	} else {
		nft.DelTable(table)
	}
	switch err := nft.Flush(); {
	case errors.Is(err, unix.ENOENT):
		return nil
	case err != nil:
		return fmt.Errorf("unhold listeners of table inet %s in netns %s: %w", name, ns.UniqueId(), err)
	}
	log.Info().Str("table", name).Str("netns", ns.UniqueId()).Int("listener_sets", len(listen)).Msg(what)
	return nil
}
