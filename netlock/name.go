package netlock

import (
	"errors"
	"strconv"
	"strings"
)

// TablePrefix starts the name of every table this package creates.
const TablePrefix = "lazycr_"

// ErrNotLockTable reports a table name that is not one of this package's.
var ErrNotLockTable = errors.New("not a lazycr lock table")

// tableName identifies a lock table: lazycr_<pid>_<start>_<seq>, where start
// is the owner's start time (field 22 of /proc/PID/stat, proc(5)) so that a
// reused pid is not taken for the owner, and seq counts the owner's locks.
type tableName struct {
	pid   int
	start uint64
	seq   uint64
}

func (n tableName) String() string {
	return TablePrefix + strconv.Itoa(n.pid) + "_" + strconv.FormatUint(n.start, 10) + "_" + strconv.FormatUint(n.seq, 10)
}

// parseTableName parses a name made by tableName.String; anything else
// (other tables, other spellings of the numbers) is ErrNotLockTable.
func parseTableName(s string) (tableName, error) {
	rest, ok := strings.CutPrefix(s, TablePrefix)
	if !ok {
		return tableName{}, ErrNotLockTable
	}
	f := strings.Split(rest, "_")
	if len(f) != 3 {
		return tableName{}, ErrNotLockTable
	}
	var v [3]uint64
	for i, x := range f {
		// Canonical decimal only, so that the name round-trips.
		if x == "" || (len(x) > 1 && x[0] == '0') {
			return tableName{}, ErrNotLockTable
		}
		n, err := strconv.ParseUint(x, 10, 64)
		if err != nil {
			return tableName{}, ErrNotLockTable
		}
		v[i] = n
	}
	if v[0] == 0 || v[0] > 1<<22 { // PID_MAX_LIMIT, see proc(5) pid_max
		return tableName{}, ErrNotLockTable
	}
	return tableName{pid: int(v[0]), start: v[1], seq: v[2]}, nil
}
