package agent

import (
	"encoding/binary"
	"reflect"
	"strings"
	"testing"
)

// sftpPacket encodes an SFTP packet: type, request id, then fields
// (string or uint32), as draft-ietf-secsh-filexfer-02 section 3.
func sftpPacket(typ byte, fields ...any) []byte {
	body := []byte{typ, 0, 0, 0, 7}
	for _, f := range fields {
		switch v := f.(type) {
		case string:
			body = binary.BigEndian.AppendUint32(body, uint32(len(v)))
			body = append(body, v...)
		case uint32:
			body = binary.BigEndian.AppendUint32(body, v)
		case []byte:
			body = append(body, v...)
		}
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

func sniff(chunks ...[]byte) []string {
	var got []string
	s := &sftpSniffer{emit: func(l string) { got = append(got, l) }}
	for _, c := range chunks {
		s.feed(c)
	}
	return got
}

func TestSFTPSniffer(t *testing.T) {
	init := []byte{0, 0, 0, 5, 1, 0, 0, 0, 3} // SSH_FXP_INIT version 3 (no request id)
	var stream []byte
	stream = append(stream, init...)
	stream = append(stream, sftpPacket(fxpOpen, "/etc/passwd", uint32(fxfRead), uint32(0))...)
	stream = append(stream, sftpPacket(6, "handle", uint64Bytes(0), strings.Repeat("x", 100000))...) // WRITE: skipped
	stream = append(stream, sftpPacket(fxpMkdir, "dir ✓", uint32(0))...)
	stream = append(stream, sftpPacket(fxpRename, "a", "b")...)
	stream = append(stream, sftpPacket(fxpExtended, "posix-rename@openssh.com", "c", "d")...)
	stream = append(stream, sftpPacket(fxpExtended, "statvfs@openssh.com", "/")...)
	stream = append(stream, sftpPacket(fxpRemove, "gone")...)
	want := []string{
		`sftp open "/etc/passwd" (read)`,
		`sftp mkdir "dir ✓"`,
		`sftp rename "a" "b"`,
		`sftp rename "c" "d"`,
		`sftp extended "statvfs@openssh.com"`,
		`sftp remove "gone"`,
	}
	if got := sniff(stream); !reflect.DeepEqual(got, want) {
		t.Fatalf("whole stream: %q, want %q", got, want)
	}
	var bytewise [][]byte
	for i := range stream {
		bytewise = append(bytewise, stream[i:i+1])
	}
	if got := sniff(bytewise...); !reflect.DeepEqual(got, want) {
		t.Fatalf("byte by byte: %q, want %q", got, want)
	}
	if got := sniff([]byte{0xff, 0xff, 0xff, 0xff, 3}, sftpPacket(fxpRemove, "x")); len(got) != 1 || !strings.Contains(got[0], "not understood") {
		t.Fatalf("garbage: %q, want one 'not understood' marker", got)
	}
}

func uint64Bytes(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// FuzzSFTPSniffer: any stream, in any chunking, gives the same markers,
// each of bounded length, without panicking.
func FuzzSFTPSniffer(f *testing.F) {
	f.Add(sftpPacket(fxpOpen, "/tmp/x", uint32(fxfWrite|fxfCreat), uint32(0)), uint8(3))
	f.Add(append(sftpPacket(fxpRename, "a", "b"), sftpPacket(fxpSymlink, "l", "t")...), uint8(1))
	f.Add([]byte{0, 0, 0, 1, 13}, uint8(2))
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		whole := sniff(stream)
		size := int(chunk%16) + 1
		var chunks [][]byte
		for i := 0; i < len(stream); i += size {
			chunks = append(chunks, stream[i:min(i+size, len(stream))])
		}
		if split := sniff(chunks...); !reflect.DeepEqual(whole, split) {
			t.Fatalf("chunking changed the markers: %q vs %q", whole, split)
		}
		for _, l := range whole {
			if len(l) > 3*maxLabelPath+200 {
				t.Fatalf("label of %d bytes", len(l))
			}
		}
	})
}
