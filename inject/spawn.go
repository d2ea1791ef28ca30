package inject

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Spawn starts path with argv and env, its standard streams on /dev/null,
// and returns it stopped at its execve before any instruction of the new
// image ran (PTRACE_TRACEME through SysProcAttr.Ptrace; options
// PTRACE_O_EXITKILL|TRACESYSGOOD|TRACECLONE|TRACEFORK, inherited by the
// threads and processes [Process.CloneThread] and [Process.CloneProcess] make). It then installs the gadget:
// `syscall; int3` poked over the entry point, an injected mmap of the scratch
// mapping (see [Process.MapScratch]), the gadget copied there and the entry
// bytes put back. Release lets the program run from its entry point.
func (t *Tracer) Spawn(path string, argv, env []string) (*Process, error) {
	var p *Process
	err := t.Do(func() error {
		var err error
		p, err = t.spawn(path, argv, env)
		return err
	})
	return p, err
}

func (t *Tracer) spawn(path string, argv, env []string) (*Process, error) {
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("spawn %s: %w", path, err)
	}
	fd := null.Fd()
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{
		Env:   env,
		Files: []uintptr{fd, fd, fd},
		Sys:   &syscall.SysProcAttr{Ptrace: true},
	})
	_ = null.Close()
	if err != nil {
		return nil, fmt.Errorf("spawn %s: %w", path, err)
	}
	p := &Process{Pid: pid, t: t, spawned: true, byTid: map[int]*thread{}}
	th := p.add(pid)
	s, err := waitStop(pid)
	if err != nil {
		_ = unix.Kill(pid, unix.SIGKILL)
		return nil, fmt.Errorf("spawn %s: wait for exec stop of pid %d: %w", path, pid, err)
	}
	if s.kind == stopExited {
		return nil, fmt.Errorf("spawn %s: pid %d %s before its exec stop: %w", path, pid, exitText(s.status), ErrNoProcess)
	}
	ok := false
	defer func() {
		if !ok {
			_ = p.Kill()
		}
	}()
	if s.kind != stopSignal || s.sig != int(unix.SIGTRAP) {
		return nil, fmt.Errorf("spawn %s: pid %d: unexpected stop %#x instead of exec SIGTRAP", path, pid, int(s.status))
	}
	if err := ptrace(unix.PTRACE_SETOPTIONS, pid, 0, spawnOptions); err != nil {
		return nil, fmt.Errorf("spawn %s: set options of pid %d: %w", path, pid, err)
	}
	if err := getRegs(pid, &th.saved); err != nil {
		return nil, fmt.Errorf("spawn %s: read registers of pid %d: %w", path, pid, err)
	}
	th.final = th.saved
	th.settled, th.parked = true, true

	entry := uintptr(th.saved.Rip)
	var orig [len(gadgetCode)]byte
	if err := p.readMem(entry, orig[:]); err != nil {
		return nil, fmt.Errorf("spawn %s: %w", path, err)
	}
	if err := p.writeMem(entry, gadgetCode[:]); err != nil {
		return nil, fmt.Errorf("spawn %s: %w", path, err)
	}
	p.gadget = entry
	_, merr := p.mapScratch(0)
	if err := p.writeMem(entry, orig[:]); err != nil {
		return nil, fmt.Errorf("spawn %s: put entry bytes back: %w", path, err)
	}
	if merr != nil {
		return nil, fmt.Errorf("spawn %s: %w", path, merr)
	}
	ok = true
	return p, nil
}
