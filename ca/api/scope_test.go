package api

import (
	"errors"
	"strings"
	"testing"
)

func TestScopeRoundTripAndAdmits(t *testing.T) {
	s, err := Scope{Hosts: []string{"DB2.prod", "db1.prod", "db1.prod"}, Labels: map[string]string{"env": "prod", "app": "billing"}}.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	enc := s.Encode()
	if enc != "host=db1.prod,host=db2.prod,label=app:billing,label=env:prod" {
		t.Fatalf("Encode = %q", enc)
	}
	back, err := ParseScope(enc)
	if err != nil || !back.Equal(s) {
		t.Fatalf("ParseScope(%q) = %+v, %v; want %+v", enc, back, err, s)
	}
	if got := s.String(); got != "hosts db1.prod, db2.prod; labels app=billing, env=prod" {
		t.Errorf("String = %q", got)
	}
	billing := map[string]string{"app": "billing", "env": "prod", "extra": "x"}
	tests := []struct {
		name   string
		names  []string
		labels map[string]string
		want   bool
	}{
		{"listed host with every label", []string{"127.0.0.1", "DB1.prod"}, billing, true},
		{"unlisted host", []string{"db3.prod"}, billing, false},
		{"one label missing", []string{"db1.prod"}, map[string]string{"app": "billing"}, false},
		{"label with another value", []string{"db1.prod"}, map[string]string{"app": "db", "env": "prod"}, false},
		{"no names, no labels", nil, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := s.Admits(tt.names, tt.labels); got != tt.want {
				t.Errorf("Admits = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestParseScopeRefuses: nothing unreadable becomes a wider scope.
func TestParseScopeRefuses(t *testing.T) {
	for _, v := range []string{"", ",", "host=", "label=app", "label=app:", "hosts=db1", "host=db1,,label=a:b", "label=a:b,label=a:c", "host=db 1", "label=a:b c", "host=db1;label=a:b"} {
		if s, err := ParseScope(v); !errors.Is(err, ErrBadScope) {
			t.Errorf("ParseScope(%q) = %+v, %v; want ErrBadScope", v, s, err)
		}
	}
}

func FuzzParseScope(f *testing.F) {
	for _, s := range []string{"host=db1", "label=app:billing", "host=a.b,host=c,label=x:y,label=z:w", "host=", "label=a:b:c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		s, err := ParseScope(v)
		if err != nil {
			return
		}
		if s.IsZero() {
			t.Fatalf("ParseScope(%q) accepted an empty scope", v)
		}
		back, err := ParseScope(s.Encode())
		if err != nil || !back.Equal(s) {
			t.Fatalf("round trip of %q: %q → %+v, %v", v, s.Encode(), back, err)
		}
		if strings.ContainsAny(s.String(), "\n\r") {
			t.Fatalf("String of %q has a line break", v)
		}
	})
}
