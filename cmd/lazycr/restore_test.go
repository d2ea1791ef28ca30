package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestLazyToken(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte("from-file-16bytes\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(dir, "open")
	if err := os.WriteFile(open, []byte("from-file-16bytes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, file, env string
		want            string
		wantErr         bool
	}{
		{name: "none"},
		{name: "env", env: "00ff10aa00ff10aa00ff10aa00ff10aa", want: "\x00\xff\x10\xaa\x00\xff\x10\xaa\x00\xff\x10\xaa\x00\xff\x10\xaa"},
		{name: "env with newline", env: "6869686968696869686968696869686a\n", want: "hihihihihihihihj"},
		{name: "file wins", file: file, env: "6869", want: "from-file-16bytes"},
		{name: "bad hex", env: "xyz", wantErr: true},
		{name: "short env (QA F10)", env: "00", wantErr: true},
		{name: "short file (QA F10)", file: short, wantErr: true},
		{name: "file others can read (QA F10)", file: open, wantErr: true},
		{name: "a FIFO (qa6: the read blocked for good)", file: fifo, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := lazyToken(&connFlags{tokenFile: tc.file}, tc.env)
			if (err != nil) != tc.wantErr {
				t.Fatalf("lazyToken: %v, want error %v", err, tc.wantErr)
			}
			if err == nil && string(got) != tc.want {
				t.Errorf("lazyToken = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestRestoreWaitsForSource: nobody listens at --lazy-from. restore says at
// once that it waits for the page server there, gives up after
// --wait-source, exits 1 and says how to wait longer.
func TestRestoreWaitsForSource(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // refused from now on
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"restore", "--lazy-from", addr, "--wait-source", "300ms"}, &stdout, &stderr)
	if code != exitFailed {
		t.Errorf("exit %d, want %d", code, exitFailed)
	}
	e := stderr.String()
	if !strings.Contains(e, "waiting for the page server at "+addr) || !strings.Contains(e, "--wait-source") {
		t.Errorf("stderr does not say it waits for %s and how to wait longer:\n%s", addr, e)
	}
	if stdout.Len() != 0 {
		t.Errorf("stdout %q: no process was restored", stdout.String())
	}
}

// TestWarnImageDirWriters (qa6 G8): restore warns when others could have
// changed the image (its directory writable by them), not when the
// directory is this user's alone.
func TestWarnImageDirWriters(t *testing.T) {
	var logs bytes.Buffer
	g := &globals{log: zerolog.New(&logs)}
	dir := t.TempDir()
	warnImageDirWriters(g, dir)
	if logs.Len() != 0 {
		t.Errorf("warned about a 0700 directory of this user: %s", logs.String())
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	warnImageDirWriters(g, dir)
	if !strings.Contains(logs.String(), "writable by others") {
		t.Errorf("no warning for a directory others may write: %q", logs.String())
	}
}

// TestTLSFilesRegular (stop 18 note): a FIFO given as --tls-cert, --tls-key
// or --tls-ca blocked dump and restore for good (SIGTERM too); anything but
// a regular file is refused, naming the flag.
func TestTLSFilesRegular(t *testing.T) {
	dir := t.TempDir()
	reg := filepath.Join(dir, "pem")
	if err := os.WriteFile(reg, []byte("not PEM\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		flag string
		c    connFlags
	}{
		{"--tls-cert", connFlags{tlsCert: fifo, tlsKey: reg, tlsCA: reg}},
		{"--tls-key", connFlags{tlsCert: reg, tlsKey: fifo, tlsCA: reg}},
		{"--tls-ca", connFlags{tlsCert: reg, tlsKey: reg, tlsCA: fifo}},
		{"--tls-ca", connFlags{tlsCert: reg, tlsKey: reg, tlsCA: dir}},
	} {
		for side, load := range map[string]func() error{
			"server": func() error { _, err := tc.c.serverTLS(); return err },
			"client": func() error { _, err := tc.c.clientTLS("src"); return err },
		} {
			errc := make(chan error, 1)
			go func() { errc <- load() }()
			select {
			case err := <-errc:
				if err == nil || !strings.Contains(err.Error(), tc.flag) || !strings.Contains(err.Error(), "not a regular file") {
					t.Errorf("%s TLS with %s not a regular file: %v, want it refused naming %s", side, tc.flag, err, tc.flag)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("%s TLS with %s a FIFO: still blocked after 30s", side, tc.flag)
			}
		}
	}
}
