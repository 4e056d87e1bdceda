package recorder

import (
	"errors"
	"strconv"
	"strings"
)

// DroppedLabelPrefix starts the label of the marker that says output is
// missing from a recording: on a tier that fails open, the agent drops
// output its recorder cannot keep up with rather than slow the session
// down, and records where and how much:
//
//	sshward-dropped bytes=N
//
// N bytes of output were sent to the client between the event before the
// marker and the event after it, and are not in the recording. Markers from
// anywhere else that start with the prefix are renamed by the Writer, so
// that no other marker can be taken for one.
const DroppedLabelPrefix = "sshward-dropped "

// DroppedLabel is the marker label for n dropped bytes.
func DroppedLabel(n int64) string {
	return DroppedLabelPrefix + "bytes=" + strconv.FormatInt(n, 10)
}

// ParseDroppedLabel reads a label written by DroppedLabel; ok is false for
// any other label.
func ParseDroppedLabel(label string) (n int64, ok bool) {
	v, found := strings.CutPrefix(label, DroppedLabelPrefix+"bytes=")
	if !found || v == "" || v[0] == '+' || v[0] == '-' || (len(v) > 1 && v[0] == '0') {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 0, false
	}
	return n, true
}

// Dropped records that n bytes of output (n > 0) were sent to the client
// but not recorded, as a DroppedLabel marker.
func (w *Writer) Dropped(n int64) error {
	if n <= 0 {
		return errors.New("recorder: dropped: byte count must be positive")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usableLocked(); err != nil {
		return err
	}
	return w.eventLocked(CodeMarker, DroppedLabel(n))
}

// Dropped records that n bytes of output were sent to the client but not
// recorded (Writer.Dropped). The recording then closes incomplete, saying
// how many bytes it lacks; BytesOut counts only the bytes recorded.
func (r *Recording) Dropped(n int64) error {
	if err := r.checked(r.w.Dropped(n)); err != nil {
		return err
	}
	r.dropped.Add(n)
	return nil
}

// droppedReason is Metadata.Incomplete of a recording that lacks n bytes.
func droppedReason(n int64) string {
	return strconv.FormatInt(n, 10) + " bytes of output were not recorded: the recorder could not keep up (see the sshward-dropped markers)"
}
