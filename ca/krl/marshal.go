package krl

import (
	"encoding/binary"
	"fmt"
	"time"
)

// Marshal encodes k in the OpenSSH KRL format (PROTOCOL.krl).
//
// The output is canonical: serials are sorted and merged, key IDs and
// fingerprints sorted bytewise (the order krl.c's trees use, and the numeric
// order PROTOCOL.krl section 4 demands for hashes), duplicates dropped. For
// each CA, isolated serials and pairs go into one KRL_SECTION_CERT_SERIAL_LIST,
// runs of three or more into KRL_SECTION_CERT_SERIAL_RANGE sections, key IDs
// into one KRL_SECTION_CERT_KEY_ID; bitmaps are never written because the
// CA's serials are random and sparse. Plain keys become one
// KRL_SECTION_FINGERPRINT_SHA256. Marshal never signs: OpenSSH >= 9.4 refuses
// signed KRLs; authenticate the transport instead.
//
// Errors wrap ErrInvalid.
func (k *KRL) Marshal() ([]byte, error) {
	c, err := k.canonicalize()
	if err != nil {
		return nil, err
	}
	b := c.encode()
	if len(b) > MaxSize {
		return nil, fmt.Errorf("krl: marshal: %d bytes is more than OpenSSH loads (%d): %w", len(b), MaxSize, ErrInvalid)
	}
	return b, nil
}

func (c *canonical) encode() []byte {
	b := binary.BigEndian.AppendUint64(nil, magic)
	b = binary.BigEndian.AppendUint32(b, formatVersion)
	b = binary.BigEndian.AppendUint64(b, c.version)
	b = binary.BigEndian.AppendUint64(b, c.date)
	b = binary.BigEndian.AppendUint64(b, 0) // flags: none defined
	b = appendString(b, nil)                // reserved
	b = appendString(b, []byte(c.comment))

	for i := range c.cas {
		b = append(b, sectionCertificates)
		b = appendString(b, c.cas[i].encode())
	}
	if len(c.hashes) > 0 {
		var sect []byte
		for _, h := range c.hashes {
			sect = appendString(sect, h[:])
		}
		b = append(b, sectionFingerprintSHA256)
		b = appendString(b, sect)
	}
	return b
}

// encode returns the section_data of one KRL_SECTION_CERTIFICATES.
func (cc *canonicalCA) encode() []byte {
	s := appendString(nil, cc.blob) // empty ca_key = any CA
	s = appendString(s, nil)        // reserved

	// A list entry costs 8 bytes and a range subsection 21 (type, length,
	// two serials), so runs of one or two serials are cheaper in the list.
	var list []byte
	for _, r := range cc.runs {
		if r.Last-r.First < 2 {
			list = binary.BigEndian.AppendUint64(list, r.First)
			if r.Last != r.First {
				list = binary.BigEndian.AppendUint64(list, r.Last)
			}
		}
	}
	if len(list) > 0 {
		s = append(s, certSerialList)
		s = appendString(s, list)
	}
	for _, r := range cc.runs {
		if r.Last-r.First >= 2 {
			var sub []byte
			sub = binary.BigEndian.AppendUint64(sub, r.First)
			sub = binary.BigEndian.AppendUint64(sub, r.Last)
			s = append(s, certSerialRange)
			s = appendString(s, sub)
		}
	}
	if len(cc.ids) > 0 {
		var sub []byte
		for _, id := range cc.ids {
			sub = appendString(sub, []byte(id))
		}
		s = append(s, certKeyID)
		s = appendString(s, sub)
	}
	return s
}

// appendString appends an SSH string (RFC 4251 section 5). Lengths above
// 4 GiB cannot occur: Marshal rejects anything above MaxSize, and a nested
// string is never longer than the whole.
func appendString(b, s []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

func unixUTC(secs uint64) time.Time {
	return time.Unix(int64(secs), 0).UTC()
}
