package recorder_test

import (
	"context"
	"strings"
	"testing"

	"github.com/sshward/sshward/recorder"
	"github.com/sshward/sshward/recorder/recordertest"
)

// TestDroppedMarker: a recording that dropped output says so where it
// happened, with the count, and closes incomplete naming the total; a
// marker from elsewhere that looks like a drop (a file name in an SFTP
// marker, say) is renamed and never parses as one.
func TestDroppedMarker(t *testing.T) {
	s := recordertest.MustSpool(t, recorder.SpoolConfig{})
	ctx := context.Background()
	r, err := s.Create(ctx, testMetadata("drops"), testHeader)
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []func() error{
		func() error { return r.Output([]byte("before\n")) },
		func() error { return r.Dropped(4096) },
		func() error { return r.Output([]byte("after\n")) },
		func() error { return r.Marker(recorder.DroppedLabel(7)) }, // forged
		func() error { return r.Dropped(10) },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Dropped(0); err == nil {
		t.Error("Dropped(0) accepted")
	}
	m, err := r.Close(ctx, recorder.EndInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Complete || !strings.HasPrefix(m.Incomplete, "4106 bytes of output were not recorded") {
		t.Errorf("complete=%v incomplete=%q", m.Complete, m.Incomplete)
	}
	if m.BytesOut != int64(len("before\nafter\n")) {
		t.Errorf("bytes_out %d counts dropped bytes", m.BytesOut)
	}
	_, evs := recordertest.MustReadCast(t, r.CastPath())
	var seq []string
	for _, e := range evs {
		if n, ok := recorder.ParseDroppedLabel(e.Data); ok && e.Code == recorder.CodeMarker {
			seq = append(seq, "drop "+strings.TrimPrefix(recorder.DroppedLabel(n), recorder.DroppedLabelPrefix))
		} else if e.Code == recorder.CodeOutput {
			seq = append(seq, "o "+e.Data)
		}
	}
	if got, want := strings.Join(seq, "|"), "o before\n|drop bytes=4096|o after\n|drop bytes=10"; got != want {
		t.Errorf("events %q, want %q", got, want)
	}
	for _, bad := range []string{"sshward-dropped bytes=0", "sshward-dropped bytes=01", "sshward-dropped bytes=-1",
		"sshward-dropped bytes=+1", "sshward-dropped bytes=1 x", "marker sshward-dropped bytes=7", "sshward-dropped bytes="} {
		if _, ok := recorder.ParseDroppedLabel(bad); ok {
			t.Errorf("ParseDroppedLabel(%q) accepted", bad)
		}
	}
}
