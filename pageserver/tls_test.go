package pageserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// writeCert writes a certificate (signed by parent, or self-signed) and its
// key as PEM files in dir.
func writeCert(t *testing.T, dir, name string, tmpl *x509.Certificate, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(filepath.Join(dir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	ca, caKey := writeCert(t, dir, "ca", &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "lazycr test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}, nil, nil)
	writeCert(t, dir, "server", &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "source"}, DNSNames: []string{"source.test"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:   now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca, caKey)
	writeCert(t, dir, "client", &x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "target"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca, caKey)
	// A client certificate from another CA.
	writeCert(t, dir, "rogue", &x509.Certificate{
		SerialNumber: big.NewInt(4), Subject: pkix.Name{CommonName: "rogue"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, nil, nil)
	p := func(n string) string { return filepath.Join(dir, n) }
	stls, err := ServerTLS(p("server.pem"), p("server.key"), p("ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	ctls, err := ClientTLS(p("client.pem"), p("client.key"), p("ca.pem"), "source.test")
	if err != nil {
		t.Fatal(err)
	}
	rogue, err := ClientTLS(p("rogue.pem"), p("rogue.key"), p("ca.pem"), "source.test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ClientTLS(p("client.pem"), p("client.key"), p("nope.pem"), "x"); err == nil {
		t.Error("ClientTLS accepted a missing CA file")
	}

	mem, lazy, files := testSetup()
	_, l, wait := startServer(t, ServerConfig{Files: files, Lazy: lazy, Memory: mem, TLS: stls})
	if c, err := Dial(context.Background(), l.Addr().String(), ClientConfig{TLS: rogue}); err == nil {
		c.Close()
		t.Fatal("a client with a certificate from another CA was served")
	}
	c := dialClient(t, l.Addr().String(), ClientConfig{TLS: ctls})
	got, err := c.Images(context.Background())
	if err != nil || len(got) != len(files) {
		t.Fatalf("Images over TLS: %d files, %v", len(got), err)
	}
	if err := c.Resumed(); err != nil {
		t.Fatal(err)
	}
	collect(t, c, mem, lazyPages(lazy), nil)
	if err := c.Done(); err != nil {
		t.Fatal(err)
	}
	if r := wait(); r.err != nil || !r.res.Done {
		t.Fatalf("Serve: %+v, %v", r.res, r.err)
	}
}
