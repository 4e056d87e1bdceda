package agent

import (
	"encoding/binary"
	"strconv"
	"strings"
)

// SFTP sessions are recorded as markers, one per file operation the client
// asks for: the stream is binary, so output events would mean nothing to a
// reader. The sniffer reads the client-to-server direction of SFTP version 3
// (draft-ietf-secsh-filexfer-02) without changing it: packets are
// uint32 length, byte type, then for requests uint32 id and the fields.

// SFTP packet types that change or reveal files.
const (
	fxpOpen     = 3
	fxpSetstat  = 9
	fxpOpendir  = 11
	fxpRemove   = 13
	fxpMkdir    = 14
	fxpRmdir    = 15
	fxpRename   = 18
	fxpSymlink  = 20
	fxpExtended = 200
)

// Open flags (SSH_FXF_*).
const (
	fxfRead   = 0x01
	fxfWrite  = 0x02
	fxfAppend = 0x04
	fxfCreat  = 0x08
	fxfTrunc  = 0x10
	fxfExcl   = 0x20
)

const (
	// maxSniffedPacket bounds what the sniffer buffers: requests it labels
	// hold a few paths; larger packets (writes) are skipped unread.
	maxSniffedPacket = 64 << 10
	// maxSFTPPacket is beyond anything a client sends (OpenSSH: 256 KiB);
	// a longer length means the stream is not SFTP and sniffing stops.
	maxSFTPPacket = 1 << 20
	// maxLabelPath keeps marker labels far below the recorder's limit.
	maxLabelPath = 1024
)

// sftpSniffer turns the client's SFTP requests into marker labels.
type sftpSniffer struct {
	emit func(label string)

	hdr  []byte // length and type of the packet being read (up to 5 bytes)
	body []byte // body of a packet being kept
	need uint32 // body bytes still to come
	keep bool   // the body is kept (else skipped)
	typ  byte
	dead bool // the stream stopped looking like SFTP
}

// feed consumes the next bytes of the stream, in any chunking.
func (s *sftpSniffer) feed(p []byte) {
	for len(p) > 0 && !s.dead {
		if s.need == 0 && len(s.hdr) < 5 {
			n := min(5-len(s.hdr), len(p))
			s.hdr = append(s.hdr, p[:n]...)
			p = p[n:]
			if len(s.hdr) < 5 {
				return
			}
			length := binary.BigEndian.Uint32(s.hdr)
			if length == 0 || length > maxSFTPPacket {
				s.dead = true
				s.emit("sftp: stream not understood; no further operations recorded")
				return
			}
			s.typ = s.hdr[4]
			s.need = length - 1
			s.keep = length-1 <= maxSniffedPacket && labelled(s.typ)
			s.body = s.body[:0]
			if s.need == 0 {
				s.packetDone()
			}
			continue
		}
		n := min(int(s.need), len(p))
		if s.keep {
			s.body = append(s.body, p[:n]...)
		}
		s.need -= uint32(n)
		p = p[n:]
		if s.need == 0 {
			s.packetDone()
		}
	}
}

func (s *sftpSniffer) packetDone() {
	if s.keep {
		if label, ok := sftpLabel(s.typ, s.body); ok {
			s.emit(label)
		}
	}
	s.hdr = s.hdr[:0]
	s.keep = false
}

func labelled(typ byte) bool {
	switch typ {
	case fxpOpen, fxpSetstat, fxpOpendir, fxpRemove, fxpMkdir, fxpRmdir, fxpRename, fxpSymlink, fxpExtended:
		return true
	}
	return false
}

// sftpLabel describes one request packet (type and body after the type
// byte). ok is false for packets it does not describe or cannot parse.
func sftpLabel(typ byte, body []byte) (label string, ok bool) {
	r := sftpFields{b: body}
	if _, ok := r.uint32(); !ok { // request id
		return "", false
	}
	path, ok := r.string()
	if !ok {
		return "", false
	}
	switch typ {
	case fxpOpen:
		flags, ok := r.uint32()
		if !ok {
			return "", false
		}
		return "sftp open " + quotePath(path) + " (" + openFlags(flags) + ")", true
	case fxpSetstat:
		return "sftp setstat " + quotePath(path), true
	case fxpOpendir:
		return "sftp opendir " + quotePath(path), true
	case fxpRemove:
		return "sftp remove " + quotePath(path), true
	case fxpMkdir:
		return "sftp mkdir " + quotePath(path), true
	case fxpRmdir:
		return "sftp rmdir " + quotePath(path), true
	case fxpRename, fxpSymlink:
		other, ok := r.string()
		if !ok {
			return "", false
		}
		op := "rename"
		if typ == fxpSymlink {
			op = "symlink"
		}
		return "sftp " + op + " " + quotePath(path) + " " + quotePath(other), true
	case fxpExtended:
		// path is the extension name here; its fields vary. OpenSSH's
		// sftp renames with posix-rename@openssh.com.
		switch path {
		case "posix-rename@openssh.com", "hardlink@openssh.com":
			from, ok1 := r.string()
			to, ok2 := r.string()
			if !ok1 || !ok2 {
				return "", false
			}
			op := "rename"
			if path == "hardlink@openssh.com" {
				op = "hardlink"
			}
			return "sftp " + op + " " + quotePath(from) + " " + quotePath(to), true
		}
		name := path
		if len(name) > 64 {
			name = name[:64]
		}
		return "sftp extended " + quotePath(name), true
	}
	return "", false
}

func openFlags(f uint32) string {
	var parts []string
	for _, fl := range []struct {
		bit  uint32
		name string
	}{{fxfRead, "read"}, {fxfWrite, "write"}, {fxfAppend, "append"}, {fxfCreat, "create"}, {fxfTrunc, "truncate"}, {fxfExcl, "exclusive"}} {
		if f&fl.bit != 0 {
			parts = append(parts, fl.name)
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}

// quotePath keeps a client-chosen path readable and bounded in a label.
func quotePath(p string) string {
	if len(p) > maxLabelPath {
		p = strings.ToValidUTF8(p[:maxLabelPath], "") + "…"
	}
	return strconv.Quote(p)
}

type sftpFields struct{ b []byte }

func (f *sftpFields) uint32() (uint32, bool) {
	if len(f.b) < 4 {
		return 0, false
	}
	v := binary.BigEndian.Uint32(f.b)
	f.b = f.b[4:]
	return v, true
}

func (f *sftpFields) string() (string, bool) {
	n, ok := f.uint32()
	if !ok || uint64(n) > uint64(len(f.b)) {
		return "", false
	}
	s := string(f.b[:n])
	f.b = f.b[n:]
	return s, true
}
