package agent

import (
	"net"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/sshward/sshward/ca/api"
)

func TestCheckValidity(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	u := uint64(now.Unix())
	tests := []struct {
		name          string
		after, before uint64
		want          string
	}{
		{"inside", u - 60, u + 60, ""},
		{"30 s early: clock skew", u + 30, u + 600, ""},
		{"exactly a minute early", u + 60, u + 600, ""},
		{"61 s early", u + 61, u + 600, reasonNotYetValid},
		{"at expiry", u - 60, u, reasonExpired},
		{"one second late: no skew after expiry", u - 60, u - 1, reasonExpired},
		{"forever", 0, ssh.CertTimeInfinity, ""},
		{"negative after", 1 << 63, ssh.CertTimeInfinity, reasonNotYetValid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert := &ssh.Certificate{ValidAfter: tt.after, ValidBefore: tt.before}
			if got := checkValidity(cert, now); got != tt.want {
				t.Errorf("checkValidity = %q, want %q", got, tt.want)
			}
			if tt.want == "" {
				// The library's strict check must agree at the pinned clock.
				c := checkerClock(cert, now).Unix()
				if c < int64(tt.after) || (tt.before != ssh.CertTimeInfinity && c >= int64(tt.before)) {
					t.Errorf("checkerClock %d outside [%d, %d)", c, tt.after, tt.before)
				}
			}
		})
	}
}

func TestSourceAddressAllows(t *testing.T) {
	addr := func(s string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(s), Port: 1234} }
	tests := []struct {
		list, ip string
		want     bool
	}{
		{"127.0.0.1", "127.0.0.1", true},
		{"10.0.0.0/8,127.0.0.0/8", "127.0.0.1", true},
		{"10.0.0.0/8", "127.0.0.1", false},
		{"::1", "::1", true},
		{"192.0.2.0/24", "::ffff:192.0.2.7", true},
		{"not-an-address", "127.0.0.1", false},
		{"127.0.0.1,bad/99", "10.0.0.1", false},
		{"", "127.0.0.1", false},
	}
	for _, tt := range tests {
		if got := sourceAddressAllows(tt.list, addr(tt.ip)); got != tt.want {
			t.Errorf("sourceAddressAllows(%q, %s) = %v, want %v", tt.list, tt.ip, got, tt.want)
		}
	}
	if sourceAddressAllows("127.0.0.1", &net.UnixAddr{Name: "/x"}) {
		t.Error("a unix socket matched source-address")
	}
}

// TestGrantSettings: the certificate's sshward extensions override the
// host's tier settings; absent ones fall back to them.
func TestGrantSettings(t *testing.T) {
	s := &Server{cfg: Config{Tier: api.TierStaging}}
	s.cfg = s.cfg.withDefaults()
	meta := fakeConnMeta{user: "deploy"}
	tests := []struct {
		name string
		ext  map[string]string
		want TierSettings
	}{
		{"host defaults (staging)", nil, TierSettings{RecordInput: false, OnRecordingFailure: FailOpen, EndOnExpiry: false}},
		{"certificate says production", productionExt(), TierSettings{RecordInput: true, OnRecordingFailure: FailClosed, EndOnExpiry: true}},
		{"unknown values read safely", map[string]string{api.ExtRecordInput: "maybe", api.ExtOnRecFail: "sometimes"},
			TierSettings{RecordInput: true, OnRecordingFailure: FailClosed}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert := &ssh.Certificate{KeyId: "alice@local tier=x", Permissions: ssh.Permissions{Extensions: tt.ext}}
			g := s.newGrant(meta, cert, &User{Name: "deploy"})
			if g.settings != tt.want {
				t.Errorf("settings = %+v, want %+v", g.settings, tt.want)
			}
			if g.identity != "alice@local" {
				t.Errorf("identity = %q", g.identity)
			}
		})
	}
}

type fakeConnMeta struct{ user string }

func (m fakeConnMeta) User() string          { return m.user }
func (m fakeConnMeta) SessionID() []byte     { return nil }
func (m fakeConnMeta) ClientVersion() []byte { return nil }
func (m fakeConnMeta) ServerVersion() []byte { return nil }
func (m fakeConnMeta) RemoteAddr() net.Addr  { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (m fakeConnMeta) LocalAddr() net.Addr   { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 22} }

func TestApplyTermModes(t *testing.T) {
	tio := unix.Termios{Lflag: unix.ECHO | unix.ICANON, Cflag: unix.CS7}
	applyTermModes(&tio, []termMode{{53, 0}, {3, 127}, {91, 1}, {42, 1}, {200, 1}})
	if tio.Lflag&unix.ECHO != 0 || tio.Lflag&unix.ICANON == 0 {
		t.Errorf("lflag %#x: want ECHO off, ICANON kept", tio.Lflag)
	}
	if tio.Cc[unix.VERASE] != 127 || tio.Cflag&unix.CSIZE != unix.CS8 || tio.Iflag&unix.IUTF8 == 0 {
		t.Errorf("termios %+v: want VERASE 127, CS8, IUTF8", tio)
	}
}

func TestRenewAt(t *testing.T) {
	cert := &ssh.Certificate{ValidAfter: 1000, ValidBefore: 4000}
	if got := renewAt(cert).Unix(); got != 3000 {
		t.Errorf("renewAt = %d, want 3000 (two thirds)", got)
	}
	if !renewAt(&ssh.Certificate{ValidBefore: ssh.CertTimeInfinity}).IsZero() {
		t.Error("a certificate without expiry is renewed")
	}
}
