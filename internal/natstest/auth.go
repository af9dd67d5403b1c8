package natstest

import (
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

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// PKI is a throwaway certificate authority with a server certificate for
// 127.0.0.1 and localhost and a client certificate, as PEM files: what a
// TLS-protected NATS deployment hands its servers and clients.
type PKI struct {
	CAFile         string // the CA certificate: what clients trust
	ServerCertFile string
	ServerKeyFile  string
	ClientCertFile string // signed by the CA: accepted by VerifyClients servers
	ClientKeyFile  string
}

// NewPKI writes a fresh CA, server and client certificate (ECDSA P-256,
// valid for an hour) under a temporary directory of tb.
func NewPKI(tb testing.TB) *PKI {
	tb.Helper()
	dir := tb.TempDir()
	p := &PKI{
		CAFile:         filepath.Join(dir, "ca.pem"),
		ServerCertFile: filepath.Join(dir, "server.pem"),
		ServerKeyFile:  filepath.Join(dir, "server-key.pem"),
		ClientCertFile: filepath.Join(dir, "client.pem"),
		ClientKeyFile:  filepath.Join(dir, "client-key.pem"),
	}
	caKey, caDER := newCert(tb, &x509.Certificate{
		Subject:               pkix.Name{CommonName: "natstest CA"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}, nil, nil)
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		tb.Fatalf("natstest: parse CA certificate: %v", err)
	}
	writePEM(tb, p.CAFile, "CERTIFICATE", caDER)

	srvKey, srvDER := newCert(tb, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "natstest server"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca, caKey)
	writePEM(tb, p.ServerCertFile, "CERTIFICATE", srvDER)
	writeKey(tb, p.ServerKeyFile, srvKey)

	cliKey, cliDER := newCert(tb, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "natstest client"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca, caKey)
	writePEM(tb, p.ClientCertFile, "CERTIFICATE", cliDER)
	writeKey(tb, p.ClientKeyFile, cliKey)
	return p
}

// newCert creates a key and a certificate from tmpl, signed by parent
// (self-signed when parent is nil).
func newCert(tb testing.TB, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*ecdsa.PrivateKey, []byte) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("natstest: generate key: %v", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		tb.Fatalf("natstest: serial number: %v", err)
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Minute)
	tmpl.NotAfter = time.Now().Add(time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		tb.Fatalf("natstest: create certificate %q: %v", tmpl.Subject.CommonName, err)
	}
	return key, der
}

func writeKey(tb testing.TB, path string, key *ecdsa.PrivateKey) {
	tb.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatalf("natstest: marshal key: %v", err)
	}
	writePEM(tb, path, "PRIVATE KEY", der)
}

func writePEM(tb testing.TB, path, typ string, der []byte) {
	tb.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		tb.Fatalf("natstest: %v", err)
	}
}

// tlsOptions turns the PKI into server options: TLS required of every
// client, and a client certificate from the CA too when verify is set.
func (p *PKI) tlsOptions(tb testing.TB, opts *server.Options, verify bool) {
	tb.Helper()
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{
		CertFile: p.ServerCertFile, KeyFile: p.ServerKeyFile, CaFile: p.CAFile, Verify: verify,
	})
	if err != nil {
		tb.Fatalf("natstest: server TLS configuration: %v", err)
	}
	opts.TLS, opts.TLSVerify, opts.TLSConfig, opts.TLSTimeout = true, verify, tc, 5
}

// NKeyUser is a NATS user authenticated by an nkey: the server knows the
// public key, the client holds the seed in a file.
type NKeyUser struct {
	Public   string
	SeedFile string
}

// NewNKeyUser creates a user nkey and writes its seed to a 0600 file.
func NewNKeyUser(tb testing.TB) NKeyUser {
	tb.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		tb.Fatalf("natstest: create user nkey: %v", err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	f := filepath.Join(tb.TempDir(), "user.nk")
	if err := os.WriteFile(f, append(seed, '\n'), 0o600); err != nil {
		tb.Fatalf("natstest: %v", err)
	}
	return NKeyUser{Public: pub, SeedFile: f}
}

// Operator is a decentralized-auth (JWT) setup: an operator, a system
// account, and one account with unlimited JetStream whose users connect
// with .creds files, as with a NATS deployment managed by nsc.
type Operator struct {
	tb        testing.TB
	claims    *jwt.OperatorClaims
	resolver  *server.MemAccResolver
	sysPub    string
	account   nkeys.KeyPair
	adminFile string
}

// NewOperator creates the operator, its accounts, and an admin user's creds
// file (used by Server.Connect).
func NewOperator(tb testing.TB) *Operator {
	tb.Helper()
	okp, err := nkeys.CreateOperator()
	if err != nil {
		tb.Fatalf("natstest: create operator: %v", err)
	}
	opub, _ := okp.PublicKey()
	o := &Operator{tb: tb, claims: jwt.NewOperatorClaims(opub), resolver: &server.MemAccResolver{}}
	o.claims.Name = "natstest"

	sys := o.newAccount(okp, "SYS", nil)
	o.sysPub, _ = sys.PublicKey()
	o.account = o.newAccount(okp, "APP", &jwt.JetStreamLimits{
		MemoryStorage: jwt.NoLimit, DiskStorage: jwt.NoLimit, Streams: jwt.NoLimit, Consumer: jwt.NoLimit,
	})
	o.adminFile = o.UserCreds("admin")
	return o
}

// newAccount creates an account signed by the operator and registers its
// JWT with the resolver; js nil leaves JetStream disabled for it.
func (o *Operator) newAccount(okp nkeys.KeyPair, name string, js *jwt.JetStreamLimits) nkeys.KeyPair {
	o.tb.Helper()
	akp, err := nkeys.CreateAccount()
	if err != nil {
		o.tb.Fatalf("natstest: create account %s: %v", name, err)
	}
	apub, _ := akp.PublicKey()
	ac := jwt.NewAccountClaims(apub)
	ac.Name = name
	if js != nil {
		ac.Limits.JetStreamLimits = *js
	}
	token, err := ac.Encode(okp)
	if err != nil {
		o.tb.Fatalf("natstest: sign account %s: %v", name, err)
	}
	if err := o.resolver.Store(apub, token); err != nil {
		o.tb.Fatalf("natstest: store account %s: %v", name, err)
	}
	return akp
}

// UserCreds creates a user of the JetStream account and writes its .creds
// file (user JWT and seed), returning the file's path.
func (o *Operator) UserCreds(name string) string {
	o.tb.Helper()
	ukp, err := nkeys.CreateUser()
	if err != nil {
		o.tb.Fatalf("natstest: create user %s: %v", name, err)
	}
	upub, _ := ukp.PublicKey()
	uc := jwt.NewUserClaims(upub)
	uc.Name = name
	token, err := uc.Encode(o.account)
	if err != nil {
		o.tb.Fatalf("natstest: sign user %s: %v", name, err)
	}
	seed, _ := ukp.Seed()
	creds, err := jwt.FormatUserConfig(token, seed)
	if err != nil {
		o.tb.Fatalf("natstest: format creds of %s: %v", name, err)
	}
	f := filepath.Join(o.tb.TempDir(), name+".creds")
	if err := os.WriteFile(f, creds, 0o600); err != nil {
		o.tb.Fatalf("natstest: %v", err)
	}
	return f
}

// serverOptions makes the server trust the operator and resolve its accounts.
func (o *Operator) serverOptions(opts *server.Options) {
	opts.TrustedOperators = []*jwt.OperatorClaims{o.claims}
	opts.AccountResolver = o.resolver
	opts.SystemAccount = o.sysPub
}

// clientOptions are the options Server.Connect needs for o's security settings.
func (o Options) clientOptions(tb testing.TB) []nats.Option {
	tb.Helper()
	var opts []nats.Option
	if o.User != "" {
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	}
	if o.Token != "" {
		opts = append(opts, nats.Token(o.Token))
	}
	if o.TLS != nil {
		opts = append(opts, nats.RootCAs(o.TLS.CAFile))
		if o.TLSHandshakeFirst {
			opts = append(opts, nats.TLSHandshakeFirst())
		}
		if o.VerifyClients {
			opts = append(opts, nats.ClientCert(o.TLS.ClientCertFile, o.TLS.ClientKeyFile))
		}
	}
	if o.NKey != nil {
		opt, err := nats.NkeyOptionFromSeed(o.NKey.SeedFile)
		if err != nil {
			tb.Fatalf("natstest: nkey seed %s: %v", o.NKey.SeedFile, err)
		}
		opts = append(opts, opt)
	}
	if o.Operator != nil {
		opts = append(opts, nats.UserCredentials(o.Operator.adminFile))
	}
	return opts
}
