package recorder

// textLocked records the clean-text prefix of s (see appendText) as output
// events, LF as CR LF when the Writer renders output so (SetOutputCRLF),
// and returns how many bytes of s it took. It is the blob Writer's text
// path (blobOutputLocked): one pass over the bytes, where the general path
// (streamLocked) validates, adds CRs and escapes in turn.
func (w *Writer) textLocked(s []byte, controls bool) (int, error) {
	if err := w.usableLocked(); err != nil {
		return 0, err
	}
	taken := 0
	t := -1.0
	for len(s) > 0 {
		if t < 0 {
			t = w.elapsedLocked()
		}
		b := w.lineStartLocked(t, CodeOutput)
		head := len(b)
		b, n := appendText(b, s, w.crlf, controls, maxEventData)
		if n == 0 {
			w.buf = b[:0]
			break
		}
		if err := w.writeLineLocked(b); err != nil {
			return taken, err
		}
		taken += n
		s = s[n:]
		if len(b)-head < maxEventData {
			break // stopped before the limit: s starts with what is not text
		}
	}
	return taken, nil
}
