package files

import (
	"errors"
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// MakeParents makes, top down, the directories above path that do not
// exist, so that a file or directory removed together with its parents
// (`rm -r` of a tree the process worked in) can be made again at its old
// path, the one its /proc link names. mkdir makes one directory (mode
// 0700, mkdirat(2) in the restored process's mount namespace); a directory
// that exists (EEXIST) is left alone. The returned undo removes the
// directories made, deepest first, with rmdir (unlinkat(2) AT_REMOVEDIR):
// the caller calls it once what it made inside is removed again.
func MakeParents(path string, mkdir, rmdir func(dir string) error) (undo func() error, err error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("make the directories above %s: not an absolute path", path)
	}
	var made []string
	undo = func() error {
		var errs []error
		for i := len(made) - 1; i >= 0; i-- {
			if err := rmdir(made[i]); err != nil {
				errs = append(errs, fmt.Errorf("remove directory %s made for the restore: %w", made[i], err))
			}
		}
		made = nil
		return errors.Join(errs...)
	}
	var chain []string
	for d := filepath.Dir(filepath.Clean(path)); d != "/"; d = filepath.Dir(d) {
		chain = append(chain, d)
	}
	for i := len(chain) - 1; i >= 0; i-- {
		err := mkdir(chain[i])
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return nil, errors.Join(fmt.Errorf("make directory %s: %w", chain[i], err), undo())
		}
		made = append(made, chain[i])
	}
	return undo, nil
}

// mkdir makes dir (mode 0700) in the process's mount namespace.
func (r *restorer) mkdir(dir string) error {
	addr, err := r.putString(scratchPath, dir)
	if err != nil {
		return err
	}
	_, err = r.rem.Syscall(unix.SYS_MKDIRAT, atFdcwd, addr, 0o700)
	return err
}

// rmdir removes the empty directory dir in the process's mount namespace.
func (r *restorer) rmdir(dir string) error {
	addr, err := r.putString(scratchPath, dir)
	if err != nil {
		return err
	}
	_, err = r.rem.Syscall(unix.SYS_UNLINKAT, atFdcwd, addr, unix.AT_REMOVEDIR)
	return err
}
