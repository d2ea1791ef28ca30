package lazypages

import "testing"

func TestWaiters(t *testing.T) {
	var ws Waiters[string]
	if ws.Waiting(3) || ws.AnyIn(0, 100) || ws.Pages() != 0 || ws.Take(3) != nil || ws.TakeAll() != nil {
		t.Fatal("the zero Waiters is not empty")
	}
	ws.Add(3, "a")
	ws.Add(3, "b")
	ws.Add(10, "c")
	ws.Add(1, "d")
	if !ws.Waiting(3) || ws.Waiting(4) || ws.Pages() != 3 {
		t.Fatalf("after Add: Waiting(3) %v, Waiting(4) %v, Pages %d", ws.Waiting(3), ws.Waiting(4), ws.Pages())
	}
	for _, tc := range []struct {
		i, n uint64
		want bool
	}{{0, 1, false}, {1, 1, true}, {4, 6, false}, {4, 7, true}, {11, 1 << 40, false}, {0, 1 << 40, true}, {2, 0, false}} {
		if got := ws.AnyIn(tc.i, tc.n); got != tc.want {
			t.Errorf("AnyIn(%d, %d) = %v, want %v", tc.i, tc.n, got, tc.want)
		}
	}
	if got := ws.Take(3); !equal(got, []string{"a", "b"}) || ws.Waiting(3) || ws.Pages() != 2 {
		t.Fatalf("Take(3) = %v, then Waiting(3) %v, Pages %d", got, ws.Waiting(3), ws.Pages())
	}
	ws.Add(0, "e")
	if got := ws.TakeAll(); !equal(got, []string{"e", "d", "c"}) || ws.Pages() != 0 {
		t.Fatalf("TakeAll = %v, then Pages %d", got, ws.Pages())
	}
	ws.Add(5, "f")
	if got := ws.Take(5); !equal(got, []string{"f"}) {
		t.Fatalf("Take(5) after TakeAll = %v", got)
	}
}
