package flowcache

import (
	"reflect"
	"runtime"
)

// The table runs three of the program's functions with shards locked:
// GetOrInsert's make (and the batch steps' make), Config.Evict and
// Config.Class. They must not call the table: a call that needs a shard
// the step holds would wait for itself forever. So the table marks the
// shards it holds while one of them runs (shard.SetBusyLocked), and runs it
// under callGuarded; a Lock that finds a marked shard held (shard's
// guard.go) calls reentered, which looks for callGuarded on the caller's
// stack and panics, naming the rule, if it is there. Another goroutine
// that merely waits for the shard finds no such frame and waits as
// before. The lookups take no lock and pay nothing; a write pays only
// when it finds its shard held while a callback runs under it, and then
// one walk of its stack.
//
// What is caught: any table method that locks a shard the callback's step
// holds (Insert, InsertPair, GetOrInsert* on a miss, Remove, RemoveEntry,
// SetClass, SetValue, Clear, Close, Range, Dump, Expire), which would
// deadlock; and, conservatively, one that waits for a shard held by
// another goroutine's callback (on this table or another), which breaks
// the rule without always deadlocking. Not caught: calls that take no
// lock (Get, GetBatch, Len, Stats), which are harmless, and a call that
// locks a free shard out of order, which may deadlock later with another
// writer.

// reentryRule is the message of the panic.
const reentryRule = "flowcache: the table was called from inside GetOrInsert's make, Config.Evict or Config.Class: they run with shards locked and must not call the table"

// callGuarded runs fn. Its frame on a goroutine's stack is what tells
// reentered that the goroutine is inside one of the program's callbacks.
//
//go:noinline
func callGuarded(fn func()) { fn() }

// guardedName is callGuarded's name as the runtime reports it.
var guardedName = runtime.FuncForPC(reflect.ValueOf(callGuarded).Pointer()).Name()

// reentered is every shard's Config.Reentered: it panics if the calling
// goroutine is inside callGuarded.
func reentered() {
	var pcs [64]uintptr
	for skip := 0; ; skip += len(pcs) {
		n := runtime.Callers(skip, pcs[:])
		frames := runtime.CallersFrames(pcs[:n])
		for {
			f, more := frames.Next()
			if f.Function == guardedName {
				panic(reentryRule)
			}
			if !more {
				break
			}
		}
		if n < len(pcs) {
			return
		}
	}
}

// callback runs fn, one of the program's functions, with the shards of l
// (and extra, when it is not -1) marked busy, so that a call from fn that
// needs one of them panics instead of waiting for itself. The caller
// holds those shards.
func (t *Table[V]) callback(l *lockSet, extra int, fn func()) {
	t.markBusy(l, extra, true)
	defer t.markBusy(l, extra, false)
	callGuarded(fn)
}

func (t *Table[V]) markBusy(l *lockSet, extra int, busy bool) {
	if l != nil {
		for _, i := range l.idx[:l.n] {
			t.shards[i].SetBusyLocked(busy)
		}
	}
	if extra >= 0 {
		t.shards[extra].SetBusyLocked(busy)
	}
}
