package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLazyToken(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, file, env string
		want            string
		wantErr         bool
	}{
		{name: "none"},
		{name: "env", env: "00ff10", want: "\x00\xff\x10"},
		{name: "env with newline", env: "6869\n", want: "hi"},
		{name: "file wins", file: file, env: "6869", want: "from-file"},
		{name: "bad hex", env: "xyz", wantErr: true},
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
