package procattr

import (
	"errors"
	"fmt"
	"strings"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// Keyrings (keyrings(7), keyctl(2)). A process reaches keys through its
// thread, process and session keyrings, which belong to its credentials.
// The thread and process keyrings are its own and die with it: keys in
// them cannot be given back, so a process holding any is refused. The
// session keyring is usually shared (a login session's, a systemd
// service's private one): the restored process keeps it when the
// restoring lazycr has the very same keyring (same serial, so the same
// boot and session); otherwise it gets a new, empty session keyring,
// because the stub inherited lazycr's, and a process that possesses a
// keyring may read every key in it its possessor permissions allow: the
// restored process (of any uid) read the secrets of the session it was
// restored from. A session keyring that held keys and is not there to
// keep is refused at restore, naming it. A process without a session
// keyring of its own uses its uid's user-session keyring, which holds a
// link to its user keyring (user-session-keyring(7)): after the
// credentials change the restored process falls back to it the same way,
// unless the stub had a session keyring of its own; then it gets a new
// one linked to its user keyring (RestoreLast), the same keys but another
// serial.
type keyringAttr struct{}

// userSessionPrefix names a uid's user-session keyring ("_uid_ses.UID").
const userSessionPrefix = "_uid_ses."

// sessionKeyringName returns the name of the session keyring of the
// process (KEYCTL_DESCRIBE: "type;uid;gid;perm;name").
func sessionKeyringName(c Caller) (string, error) {
	buf := make([]byte, 256)
	if err := c.CallOut(buf, unix.SYS_KEYCTL, unix.KEYCTL_DESCRIBE, keySpec(unix.KEY_SPEC_SESSION_KEYRING), Out, uintptr(len(buf))); err != nil {
		return "", fmt.Errorf("injected keyctl(KEYCTL_DESCRIBE, session keyring): %w", err)
	}
	d, _, _ := strings.Cut(string(buf), "\x00")
	parts := strings.SplitN(d, ";", 5)
	if len(parts) != 5 {
		return "", fmt.Errorf("injected keyctl(KEYCTL_DESCRIBE, session keyring): description %q is not type;uid;gid;perm;name", d)
	}
	return parts[4], nil
}

// keySpec passes a KEY_SPEC_* constant as the key_serial_t (int) argument.
func keySpec(spec int32) uintptr { return uintptr(uint32(spec)) }

// keyringKeys returns how many keys keyring spec of the process holds: the
// length of KEYCTL_READ's list of 4-byte serials, 0 when it has no such
// keyring (ENOKEY).
func keyringKeys(c Caller, spec int32) (uint32, error) {
	n, err := c.Call(unix.SYS_KEYCTL, unix.KEYCTL_READ, keySpec(spec), 0, 0)
	if errors.Is(err, unix.ENOKEY) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return uint32(n / 4), nil
}

func (keyringAttr) dump(c Caller, p *pb.Process) error {
	id, err := c.Call(unix.SYS_KEYCTL, unix.KEYCTL_GET_KEYRING_ID, keySpec(unix.KEY_SPEC_SESSION_KEYRING), 0)
	if errors.Is(err, unix.ENOKEY) || errors.Is(err, unix.ENOSYS) {
		return nil // no keyrings in this kernel
	}
	if err != nil {
		return fmt.Errorf("injected keyctl(KEYCTL_GET_KEYRING_ID, session keyring): %w", err)
	}
	name, err := sessionKeyringName(c)
	if err != nil {
		return err
	}
	own := !strings.HasPrefix(name, userSessionPrefix)
	var n uint32
	if own {
		if n, err = keyringKeys(c, unix.KEY_SPEC_SESSION_KEYRING); err != nil {
			return fmt.Errorf("injected keyctl(KEYCTL_READ, session keyring %d): %w", int32(id), err)
		}
	}
	for _, k := range []struct {
		spec int32
		name string
	}{{unix.KEY_SPEC_THREAD_KEYRING, "thread"}, {unix.KEY_SPEC_PROCESS_KEYRING, "process"}} {
		kid, err := c.Call(unix.SYS_KEYCTL, unix.KEYCTL_GET_KEYRING_ID, keySpec(k.spec), 0)
		if errors.Is(err, unix.ENOKEY) {
			continue
		}
		if err != nil {
			return fmt.Errorf("injected keyctl(KEYCTL_GET_KEYRING_ID, %s keyring): %w", k.name, err)
		}
		kn, err := keyringKeys(c, k.spec)
		if err != nil {
			return fmt.Errorf("injected keyctl(KEYCTL_READ, %s keyring %d): %w", k.name, int32(kid), err)
		}
		if kn > 0 {
			return fmt.Errorf("its %s keyring %d holds %d keys (keyrings(7)): they die with the process and are not restored", k.name, int32(kid), kn)
		}
	}
	p.SessionKeyring, p.SessionKeyringKeys, p.SessionKeyringOwn = int32(id), n, own
	return nil
}

func (keyringAttr) restore(c Caller, p *pb.Process) error {
	if p.SessionKeyring == 0 {
		return nil // not recorded (an older image)
	}
	have, err := c.Call(unix.SYS_KEYCTL, unix.KEYCTL_GET_KEYRING_ID, keySpec(unix.KEY_SPEC_SESSION_KEYRING), 0)
	if err != nil && !errors.Is(err, unix.ENOKEY) {
		return fmt.Errorf("injected keyctl(KEYCTL_GET_KEYRING_ID, session keyring): %w", err)
	}
	if err == nil && int32(have) == p.SessionKeyring {
		return nil // the very same keyring, inherited from lazycr
	}
	if !p.SessionKeyringOwn {
		name, err := sessionKeyringName(c)
		if err != nil {
			return err
		}
		if strings.HasPrefix(name, userSessionPrefix) {
			return nil // none of the stub's own either: the same fallback once the uid is set
		}
	}
	if p.SessionKeyringKeys > 0 {
		return fmt.Errorf("its session keyring %d held %d keys and is not lazycr's here (%d): restore cannot give them back; restore from a process of that session (keyctl show @s)", p.SessionKeyring, p.SessionKeyringKeys, int32(have))
	}
	// A new anonymous session keyring (keyctl(2) KEYCTL_JOIN_SESSION_KEYRING
	// with a NULL name): empty, as the process's was, and not lazycr's.
	if _, err := c.Call(unix.SYS_KEYCTL, unix.KEYCTL_JOIN_SESSION_KEYRING, 0); err != nil {
		return fmt.Errorf("injected keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL): %w", err)
	}
	return nil
}

// linkUserKeyring gives a process that had no session keyring of its own,
// and got a new one at restore, what its uid's user-session keyring held:
// a link to its user keyring (keyctl(2) KEYCTL_LINK), once its
// credentials are set.
func linkUserKeyring(c Caller, p *pb.Process) error {
	if p.SessionKeyring == 0 || p.SessionKeyringOwn {
		return nil
	}
	name, err := sessionKeyringName(c)
	if err != nil {
		return err
	}
	if strings.HasPrefix(name, userSessionPrefix) {
		return nil // it falls back to its uid's user-session keyring
	}
	if _, err := c.Call(unix.SYS_KEYCTL, unix.KEYCTL_LINK, keySpec(unix.KEY_SPEC_USER_KEYRING), keySpec(unix.KEY_SPEC_SESSION_KEYRING)); err != nil {
		return fmt.Errorf("injected keyctl(KEYCTL_LINK, user keyring, session keyring): %w", err)
	}
	return nil
}

func (keyringAttr) show(p *pb.Process) string {
	if p.SessionKeyringKeys == 0 {
		return ""
	}
	return fmt.Sprintf("session keyring %d with %d keys", p.SessionKeyring, p.SessionKeyringKeys)
}
