package main

import (
	"crypto/tls"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/lazycr/lazycr/pageserver"
	"github.com/spf13/pflag"
)

// connFlags are the page-server connection options dump --lazy and restore
// --lazy-from share.
type connFlags struct {
	tlsCert, tlsKey, tlsCA string
	tokenFile              string
	reconnectTimeout       time.Duration
}

// register adds the flags; source says which side's help to write: dump
// (--lazy, which serves) or restore (--lazy-from, which dials).
func (c *connFlags) register(f *pflag.FlagSet, source bool) {
	with, token := "with --lazy-from: ", "file holding the shared secret to present to the source (default: $LAZYCR_TOKEN, hex-encoded, as dump --lazy prints it)"
	if source {
		with, token = "with --lazy: ", "file holding a shared secret the target must present before anything is served (or set $LAZYCR_TOKEN to it, hex-encoded; with neither nor TLS, a one-time secret is made and printed)"
	}
	f.StringVar(&c.tlsCert, "tls-cert", "", with+"TLS certificate (PEM) for the page-server connection; needs --tls-key and --tls-ca (mutual TLS)")
	f.StringVar(&c.tlsKey, "tls-key", "", with+"TLS private key (PEM)")
	f.StringVar(&c.tlsCA, "tls-ca", "", with+"CA certificate (PEM) the peer's certificate must be signed by")
	f.StringVar(&c.tokenFile, "token", "", with+token)
	f.DurationVar(&c.reconnectTimeout, "reconnect-timeout", 30*time.Second, with+"after the process resumed, how long a broken connection may take to come back")
}

func (c *connFlags) validate() error {
	n := 0
	for _, s := range []string{c.tlsCert, c.tlsKey, c.tlsCA} {
		if s != "" {
			n++
		}
	}
	if n != 0 && n != 3 {
		return usagef("--tls-cert, --tls-key and --tls-ca go together (mutual TLS)")
	}
	if c.reconnectTimeout < 0 {
		return usagef("--reconnect-timeout must not be negative")
	}
	return nil
}

// token returns the shared secret from --token FILE, or nil (see lazyToken
// for $LAZYCR_TOKEN).
func (c *connFlags) token() ([]byte, error) {
	if c.tokenFile == "" {
		return nil, nil
	}
	st, err := statRegular("read token", c.tokenFile)
	if err != nil {
		return nil, err
	}
	// As ssh does for private keys: a secret others can read is no secret.
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("read token: %s is readable by group or others (mode %#o): chmod 600 it", c.tokenFile, st.Mode().Perm())
	}
	b, err := os.ReadFile(c.tokenFile)
	if err != nil {
		return nil, fmt.Errorf("read token: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return nil, fmt.Errorf("read token: %s is empty", c.tokenFile)
	}
	if err := checkTokenStrength([]byte(t), c.tokenFile); err != nil {
		return nil, err
	}
	return []byte(t), nil
}

// minTokenBytes is the shortest secret the page server accepts: the one
// dump --lazy generates is 16 random bytes. A shorter one can be guessed
// by trying (the server keeps listening after a wrong token).
const minTokenBytes = 16

// checkTokenStrength refuses a secret shorter than minTokenBytes; what names
// where it came from.
func checkTokenStrength(tok []byte, what string) error {
	if len(tok) < minTokenBytes {
		return fmt.Errorf("the secret in %s is %d bytes: at least %d are needed (leave --token and $LAZYCR_TOKEN unset on the source and it makes one)", what, len(tok), minTokenBytes)
	}
	return nil
}

// statRegular stats the file at path, which the command is about to read
// (what says for what), and refuses anything but a regular file: a FIFO
// would block the read for good (and SIGTERM with it), a directory or
// device is no key, certificate or secret.
func statRegular(what, path string) (os.FileInfo, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %s is not a regular file (%s)", what, path, st.Mode().Type())
	}
	return st, nil
}

// tlsFiles checks that --tls-cert, --tls-key and --tls-ca are regular files.
func (c *connFlags) tlsFiles() error {
	for _, f := range []struct{ flag, path string }{{"--tls-cert", c.tlsCert}, {"--tls-key", c.tlsKey}, {"--tls-ca", c.tlsCA}} {
		if _, err := statRegular("read "+f.flag, f.path); err != nil {
			return err
		}
	}
	return nil
}

func (c *connFlags) serverTLS() (*tls.Config, error) {
	if c.tlsCert == "" {
		return nil, nil
	}
	if err := c.tlsFiles(); err != nil {
		return nil, err
	}
	return pageserver.ServerTLS(c.tlsCert, c.tlsKey, c.tlsCA)
}

func (c *connFlags) clientTLS(serverName string) (*tls.Config, error) {
	if c.tlsCert == "" {
		return nil, nil
	}
	if err := c.tlsFiles(); err != nil {
		return nil, err
	}
	return pageserver.ClientTLS(c.tlsCert, c.tlsKey, c.tlsCA, serverName)
}
