package probe

import "github.com/lazycr/lazycr/files"

// fileProbes are the kernel features the fd dump relies on (package files).
func fileProbes() []Result {
	probe := func(name string, required bool, run func() error, ok string) Result {
		if err := run(); err != nil {
			return fail(name, required, err)
		}
		return Result{Name: name, Required: required, OK: true, Detail: ok}
	}
	return []Result{
		probe("kcmp-file", true, files.ProbeKcmp, "kcmp KCMP_FILE finds fds sharing an open file description"),
		probe("sock-diag-udp", false, files.ProbeSockDiag, "sock_diag shows UDP sockets' shutdown state (else UDP sockets are refused)"),
		probe("file-handles", false, files.ProbeFileHandles, "open_by_handle_at works (else inotify watches are refused)"),
	}
}
