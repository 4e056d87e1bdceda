package policy_test

import (
	"errors"
	"fmt"

	"github.com/sshward/sshward/ca/policy"
)

func ExamplePolicy_Grant() {
	p, err := policy.Parse(policy.Default())
	if err != nil {
		panic(err)
	}
	g, err := p.Grant(policy.Request{
		Identity:   policy.Identity{User: "alice", Groups: []string{"sre"}, MFA: true},
		Tier:       "production",
		ClientAddr: "10.1.2.3",
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(g.Principals, g.TTL, g.CriticalOptions["source-address"], g.Extensions["tier@sshward"])

	_, err = p.Grant(policy.Request{
		Identity: policy.Identity{User: "alice", Groups: []string{"sre"}},
		Tier:     "production",
	})
	fmt.Println(errors.Is(err, policy.ErrMFARequired), err)
	// Output:
	// [alice] 15m0s 10.1.2.3/32 production
	// true tier production requires multi-factor login: log in again with your TOTP code or an MFA-backed OIDC login
}

func ExampleParse() {
	_, err := policy.Parse([]byte(`tiers:
  production:
    ttl: 15m
    max_ttl: 10m
    principals: {sre: ["{{user}}"]}
`))
	fmt.Println(err)
	// Output:
	// policy line 4: tier "production": max_ttl 10m is shorter than ttl 15m
}
