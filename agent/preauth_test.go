package agent

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestParseStartupLimits(t *testing.T) {
	tests := []struct {
		in      string
		want    StartupLimits
		wantErr bool
	}{
		{in: "10:30:100", want: StartupLimits{10, 30, 100}},
		{in: "100:30:300", want: DefaultMaxStartups()},
		{in: "50", want: StartupLimits{50, 100, 50}},
		{in: " 5 : 0 : 5 ", want: StartupLimits{5, 0, 5}},
		{in: "10:30", wantErr: true},
		{in: "10:130:100", wantErr: true},
		{in: "100:30:10", wantErr: true},
		{in: "0:30:10", wantErr: true},
		{in: "a:b:c", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseStartupLimits(tt.in)
		if (err != nil) != tt.wantErr || err == nil && got != tt.want {
			t.Errorf("ParseStartupLimits(%q) = %v, %v; want %v (error %v)", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err == nil && got.String() != "" {
			if back, err := ParseStartupLimits(got.String()); err != nil || back != got {
				t.Errorf("round trip of %v: %v %v", got, back, err)
			}
		}
	}
}

func TestSourceOf(t *testing.T) {
	tcp := func(ip string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: 1} }
	tests := []struct {
		addr net.Addr
		want string
	}{
		{tcp("127.0.0.5"), "127.0.0.5/32"},
		{tcp("::ffff:192.0.2.7"), "192.0.2.7/32"},
		{tcp("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64"},
		{tcp("2001:db8:1:2:bbbb::9"), "2001:db8:1:2::/64"}, // the same /64: one source
		{&net.UnixAddr{Name: "@x", Net: "unix"}, "invalid Prefix"},
	}
	for _, tt := range tests {
		if got := sourceOf(tt.addr).String(); got != tt.want {
			t.Errorf("sourceOf(%v) = %s, want %s", tt.addr, got, tt.want)
		}
	}
}

// TestPreauthAdmit: the per-source cap holds per source and frees on
// release; MaxStartups never drops below Begin, always at Full, and in
// between at about the rate sshd's formula gives.
func TestPreauthAdmit(t *testing.T) {
	a, b := netip.MustParsePrefix("127.0.0.5/32"), netip.MustParsePrefix("127.0.0.1/32")
	now := time.Unix(1_800_000_000, 0)
	p := newPreauth(3, StartupLimits{Begin: 100, Rate: 30, Full: 300}, 0, [32]byte{1})
	for i := range 3 {
		if why := p.admit(a, now); why != "" {
			t.Fatalf("connection %d from a dropped: %s", i, why)
		}
	}
	if why := p.admit(a, now); why != "per-source limit" {
		t.Fatalf("fourth connection from a: %q, want the per-source limit", why)
	}
	if why := p.admit(b, now); why != "" {
		t.Fatalf("another source dropped: %s", why)
	}
	p.release(a)
	if why := p.admit(a, now); why != "" {
		t.Fatalf("after a release, a is still capped: %s", why)
	}
	if st := p.snapshot(now); st.Unauthenticated != 4 || st.DroppedPerSource != 1 {
		t.Errorf("stats %+v", st)
	}

	// The early-drop curve, on a fixed seed.
	q := newPreauth(1<<30, StartupLimits{Begin: 10, Rate: 30, Full: 20}, 0, [32]byte{2})
	for _, tt := range []struct {
		total  int
		lo, hi int // drops per 1000
	}{
		{9, 0, 0}, {10, 250, 350}, {15, 600, 700}, {19, 900, 970}, {20, 1000, 1000}, {50, 1000, 1000},
	} {
		q.total = tt.total
		drops := 0
		for range 1000 {
			if q.dropStartupLocked() {
				drops++
			}
		}
		if drops < tt.lo || drops > tt.hi {
			t.Errorf("at %d unauthenticated: %d of 1000 dropped, want %d–%d", tt.total, drops, tt.lo, tt.hi)
		}
	}
}

// TestPreauthPenalties: one timeout costs nothing; a second one within the
// penalty shuts the source out (closed at accept, uncounted) until its
// penalty falls to 15 s; other sources are not touched; penalties are
// capped at 10 minutes.
func TestPreauthPenalties(t *testing.T) {
	a, b := netip.MustParsePrefix("127.0.1.7/32"), netip.MustParsePrefix("127.0.0.1/32")
	now := time.Unix(1_800_000_000, 0)
	p := newPreauth(10, DefaultMaxStartups(), 10*time.Second, [32]byte{3})
	p.timedOut(a, true, now)
	if why := p.admit(a, now); why != "" {
		t.Fatalf("one timeout (10 s of penalty) shut the source out: %s", why)
	}
	p.release(a)
	p.timedOut(a, false, now.Add(time.Second)) // until now+21s
	if why := p.admit(a, now.Add(2*time.Second)); why != "source penalized" {
		t.Fatalf("two timeouts: %q, want the source penalized", why)
	}
	if why := p.admit(b, now.Add(2*time.Second)); why != "" {
		t.Fatalf("another source dropped: %s", why)
	}
	p.release(b)
	if why := p.admit(a, now.Add(6*time.Second+time.Millisecond)); why != "" {
		t.Fatalf("penalty down to 15 s: still dropped: %s", why)
	}
	p.release(a)
	for i := range 200 {
		p.timedOut(a, true, now.Add(10*time.Second+time.Duration(i)))
	}
	if why := p.admit(a, now.Add(10*time.Second+penaltyMax-penaltyMin-time.Second)); why != "source penalized" {
		t.Fatalf("within the capped penalty: %q", why)
	}
	if why := p.admit(a, now.Add(10*time.Second+penaltyMax-penaltyMin+time.Second)); why != "" {
		t.Fatalf("the penalty is not capped at %s: %s", penaltyMax, why)
	}
	if st := p.snapshot(now); st.DroppedPenalty != 2 || st.Penalized != 1 || st.BannerTimeouts != 201 || st.HandshakeTimeouts != 1 {
		t.Errorf("stats %+v", st)
	}
	// Blocked: penalized past the grace, so its connections are closed at accept.
	if st := p.snapshot(now); st.Blocked != 1 {
		t.Errorf("while its penalty exceeds the grace: blocked %d, want 1", st.Blocked)
	}
	if st := p.snapshot(now.Add(10*time.Second + penaltyMax - penaltyMin + time.Second)); st.Penalized != 1 || st.Blocked != 0 {
		t.Errorf("within the grace: penalized %d blocked %d, want 1 and 0", st.Penalized, st.Blocked)
	}
	off := newPreauth(10, DefaultMaxStartups(), -1, [32]byte{4})
	for range 10 {
		off.timedOut(a, true, now)
	}
	if why := off.admit(a, now); why != "" || off.snapshot(now).Penalized != 0 {
		t.Errorf("penalties off, yet %q", why)
	}
}
