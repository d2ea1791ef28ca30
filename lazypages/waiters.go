package lazypages

import (
	"maps"
	"slices"
)

// Waiters records who waits for which page (the faults parked until their
// page arrives), by page index. The zero Waiters is empty and ready. Not
// safe for concurrent use.
type Waiters[T any] struct {
	m map[uint64][]T
}

// Add records that w waits for page i.
func (ws *Waiters[T]) Add(i uint64, w T) {
	if ws.m == nil {
		ws.m = map[uint64][]T{}
	}
	ws.m[i] = append(ws.m[i], w)
}

// Waiting reports whether anyone waits for page i.
func (ws *Waiters[T]) Waiting(i uint64) bool { return len(ws.m[i]) > 0 }

// AnyIn reports whether anyone waits for a page of [i, i+n).
func (ws *Waiters[T]) AnyIn(i, n uint64) bool {
	if len(ws.m) == 0 {
		return false
	}
	if n > uint64(len(ws.m)) {
		for k := range ws.m {
			if k >= i && k-i < n {
				return true
			}
		}
		return false
	}
	for k := i; k < i+n; k++ {
		if len(ws.m[k]) > 0 {
			return true
		}
	}
	return false
}

// Pages returns how many pages someone waits for.
func (ws *Waiters[T]) Pages() int { return len(ws.m) }

// Take removes and returns the waiters of page i, in the order they came.
func (ws *Waiters[T]) Take(i uint64) []T {
	w, ok := ws.m[i]
	if ok {
		delete(ws.m, i)
	}
	return w
}

// TakeAll removes and returns every waiter, by page index and then in the
// order they came.
func (ws *Waiters[T]) TakeAll() []T {
	var all []T
	for _, i := range slices.Sorted(maps.Keys(ws.m)) {
		all = append(all, ws.m[i]...)
	}
	ws.m = nil
	return all
}
