package agent

import "golang.org/x/sys/unix"

// Terminal modes of a pty-req (RFC 4254 section 8, RFC 8160 for IUTF8)
// applied to the new terminal, as sshd does, so that the remote line
// discipline matches the user's local terminal (erase key, UTF-8 …).

// modeChars maps control-character opcodes to their c_cc index.
var modeChars = map[byte]int{
	1: unix.VINTR, 2: unix.VQUIT, 3: unix.VERASE, 4: unix.VKILL, 5: unix.VEOF,
	6: unix.VEOL, 7: unix.VEOL2, 8: unix.VSTART, 9: unix.VSTOP, 10: unix.VSUSP,
	12: unix.VREPRINT, 13: unix.VWERASE, 14: unix.VLNEXT, 18: unix.VDISCARD,
}

// modeFlag is one flag opcode: which termios word and which bit.
type modeFlag struct {
	word byte // 'i', 'l', 'o' or 'c'
	bit  uint32
}

var modeFlags = map[byte]modeFlag{
	30: {'i', unix.IGNPAR}, 31: {'i', unix.PARMRK}, 32: {'i', unix.INPCK}, 33: {'i', unix.ISTRIP},
	34: {'i', unix.INLCR}, 35: {'i', unix.IGNCR}, 36: {'i', unix.ICRNL}, 37: {'i', unix.IUCLC},
	38: {'i', unix.IXON}, 39: {'i', unix.IXANY}, 40: {'i', unix.IXOFF}, 41: {'i', unix.IMAXBEL},
	42: {'i', unix.IUTF8},
	50: {'l', unix.ISIG}, 51: {'l', unix.ICANON}, 52: {'l', unix.XCASE}, 53: {'l', unix.ECHO},
	54: {'l', unix.ECHOE}, 55: {'l', unix.ECHOK}, 56: {'l', unix.ECHONL}, 57: {'l', unix.NOFLSH},
	58: {'l', unix.TOSTOP}, 59: {'l', unix.IEXTEN}, 60: {'l', unix.ECHOCTL}, 61: {'l', unix.ECHOKE},
	62: {'l', unix.PENDIN},
	70: {'o', unix.OPOST}, 71: {'o', unix.OLCUC}, 72: {'o', unix.ONLCR}, 73: {'o', unix.OCRNL},
	74: {'o', unix.ONOCR}, 75: {'o', unix.ONLRET},
	90: {'c', unix.CS7}, 91: {'c', unix.CS8}, 92: {'c', unix.PARENB}, 93: {'c', unix.PARODD},
}

// applyTermModes sets modes on t; opcodes it does not know (speeds,
// VDSUSP, VSTATUS …) are ignored as the RFC allows.
func applyTermModes(t *unix.Termios, modes []termMode) {
	for _, m := range modes {
		if idx, ok := modeChars[m.Op]; ok {
			t.Cc[idx] = uint8(m.Arg)
			continue
		}
		f, ok := modeFlags[m.Op]
		if !ok {
			continue
		}
		word := &t.Iflag
		switch f.word {
		case 'l':
			word = &t.Lflag
		case 'o':
			word = &t.Oflag
		case 'c':
			word = &t.Cflag
		}
		switch {
		case f.word == 'c' && (f.bit == unix.CS7 || f.bit == unix.CS8):
			// Character sizes share the CSIZE field: set replaces it,
			// clear means nothing.
			if m.Arg != 0 {
				*word = *word&^unix.CSIZE | f.bit
			}
		case m.Arg != 0:
			*word |= f.bit
		default:
			*word &^= f.bit
		}
	}
}
