package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
)

// netns is a network namespace joined to this one by a veth pair: one
// agent runs inside it, everything else outside. A network cut deletes the
// namespace's route to the outside (both directions stop: nothing inside
// can send, so no TCP segment is answered); restoring puts it back, and
// the connections that survived the cut go on.
type netns struct {
	name         string
	hostIf, nsIf string
	hostIP, nsIP string
	prefix       string // the /30 both ends share
	cut          bool
}

// newNetns makes the namespace and the pair, named and numbered after
// this process so that two soaks on one machine do not collide.
func newNetns(ctx context.Context) (*netns, error) {
	pid := os.Getpid()
	block := (pid % 16384) * 4 // a /30 inside 10.213.0.0/16
	base := netip.AddrFrom4([4]byte{10, 213, byte(block >> 8), byte(block)})
	n := &netns{
		name:   fmt.Sprintf("sshward-soak-%d", pid),
		hostIf: fmt.Sprintf("sws%dh", pid),
		nsIf:   fmt.Sprintf("sws%dn", pid),
		hostIP: base.Next().String(),
		nsIP:   base.Next().Next().String(),
		prefix: base.String() + "/30",
	}
	steps := [][]string{
		{"ip", "netns", "add", n.name},
		{"ip", "link", "add", n.hostIf, "type", "veth", "peer", "name", n.nsIf},
		{"ip", "link", "set", n.nsIf, "netns", n.name},
		{"ip", "addr", "add", n.hostIP + "/30", "dev", n.hostIf},
		{"ip", "link", "set", n.hostIf, "up"},
		{"ip", "netns", "exec", n.name, "ip", "addr", "add", n.nsIP + "/30", "dev", n.nsIf},
		{"ip", "netns", "exec", n.name, "ip", "link", "set", n.nsIf, "up"},
		{"ip", "netns", "exec", n.name, "ip", "link", "set", "lo", "up"},
	}
	for _, st := range steps {
		if err := command(ctx, st[0], st[1:]...); err != nil {
			n.remove(ctx)
			return nil, err
		}
	}
	return n, nil
}

// setCut cuts (true) or restores (false) the namespace's network.
func (n *netns) setCut(ctx context.Context, cut bool) error {
	verb := "add"
	if cut {
		verb = "del"
	}
	args := []string{"netns", "exec", n.name, "ip", "route", verb, n.prefix, "dev", n.nsIf}
	if !cut {
		args = append(args, "src", n.nsIP)
	}
	if err := command(ctx, "ip", args...); err != nil {
		return err
	}
	n.cut = cut
	return nil
}

func (n *netns) remove(ctx context.Context) {
	command(ctx, "ip", "link", "del", n.hostIf)
	command(ctx, "ip", "netns", "del", n.name)
}
