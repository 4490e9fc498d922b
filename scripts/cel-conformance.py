#!/usr/bin/env python3
"""Turn cel-spec's conformance files (tests/simple/testdata/*.textproto) into keel's own
case table, tests/unit/expr/cel_conformance_cases.h.

    scripts/cel-conformance.py CEL_SPEC_CHECKOUT/tests/simple/testdata > tests/unit/expr/cel_conformance_cases.h

Offline and stdlib-only: it parses the small textproto subset these files use. Every case
becomes one row; a case keel cannot run (protobuf messages, static type deduction only,
...) still gets a row, with the reason in `skip`, so the table accounts for every case.

A case with disable_check is compiled unchecked (see expr_compile_bound). Expected values: scalars are C literals; lists, maps, type values, null, durations and
timestamps are written as CEL literal text that the test evaluates and compares by strict
(same type) deep equality. Bindings become CEL literal text substituted for the name.
"""
import math
import os
import re
import sys

FILES = ["basic", "comparisons", "conversions", "fields", "fp_math", "integer_math", "lists",
         "logic", "macros", "parse", "plumbing", "string", "timestamps", "type_deduction"]


# ---- textproto -----------------------------------------------------------------------

TOKEN = re.compile(r'''\s*(?:(\#[^\n]*)|("(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')|
                   (\[[A-Za-z0-9_./]+\])|([A-Za-z_][A-Za-z0-9_.]*)|
                   (-?(?:inf|nan|[0-9][0-9.eE+\-xXa-fA-F]*)[uUfF]?)|([{}:<>,;\[\]]))''', re.X)


def unescape(lit):
    """A textproto string literal to bytes (C escapes, octal, \\x)."""
    body, out, i = lit[1:-1], bytearray(), 0
    simple = {'n': 10, 't': 9, 'r': 13, 'a': 7, 'b': 8, 'f': 12, 'v': 11, '\\': 92, "'": 39,
              '"': 34, '?': 63}
    raw = body.encode('utf-8')
    while i < len(raw):
        c = raw[i]
        if c != 92:
            out.append(c)
            i += 1
            continue
        e = chr(raw[i + 1])
        if e in simple:
            out.append(simple[e])
            i += 2
        elif e in 'xX':
            j = i + 2
            while j < len(raw) and j < i + 4 and chr(raw[j]) in '0123456789abcdefABCDEF':
                j += 1
            out.append(int(raw[i + 2:j], 16))
            i = j
        elif e in '01234567':
            j = i + 1
            while j < len(raw) and j < i + 4 and chr(raw[j]) in '01234567':
                j += 1
            out.append(int(raw[i + 1:j], 8) & 0xff)
            i = j
        elif e in 'uU':
            n = 4 if e == 'u' else 8
            out += chr(int(raw[i + 2:i + 2 + n], 16)).encode('utf-8')
            i += 2 + n
        else:
            raise ValueError('escape \\' + e)
    return bytes(out)


def tokens(text):
    pos = 0
    while pos < len(text):
        m = TOKEN.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip() == '':
                return
            raise ValueError('textproto: cannot parse at %r' % text[pos:pos + 40])
        pos = m.end()
        if m.group(1):
            continue
        for kind, g in (('str', 2), ('ext', 3), ('id', 4), ('num', 5), ('p', 6)):
            if m.group(g) is not None:
                yield kind, m.group(g)
                break


def parse_msg(toks, i, close):
    """Fields until the closing brace: a list of (name, value); value is a str/bytes/num
    token tuple or a nested list."""
    fields = []
    while i < len(toks):
        kind, v = toks[i]
        if kind == 'p' and v == close:
            return fields, i + 1
        if kind == 'p' and v in ',;':
            i += 1
            continue
        name = v
        i += 1
        if toks[i] == ('p', ':'):
            i += 1
        kind, v = toks[i]
        if kind == 'p' and v in '{<':
            sub, i = parse_msg(toks, i + 1, '}' if v == '{' else '>')
            fields.append((name, sub))
        elif kind == 'str':
            s = unescape(v)
            i += 1
            while i < len(toks) and toks[i][0] == 'str':  # adjacent literals concatenate
                s += unescape(toks[i][1])
                i += 1
            fields.append((name, ('str', s)))
        else:
            fields.append((name, (kind, v)))
            i += 1
    return fields, i


def get(msg, name, default=None):
    for k, v in msg:
        if k == name:
            return v
    return default


def getall(msg, name):
    return [v for k, v in msg if k == name]


# ---- values ----------------------------------------------------------------------------

class Skip(Exception):
    pass


def cel_bytes_lit(b, prefix):
    out = prefix + '"'
    for c in b:
        if c in (34, 92):
            out += '\\' + chr(c)
        elif 32 <= c < 127:
            out += chr(c)
        else:
            out += '\\%03o' % c
    return out + '"'


def cel_string_lit(b):
    s = b.decode('utf-8')
    out = '"'
    for ch in s:
        if ch in '"\\':
            out += '\\' + ch
        elif 32 <= ord(ch) < 127:
            out += ch
        else:
            out += '\\U%08x' % ord(ch)
    return out + '"'


def num(tok):
    return tok[1]


def duration_text(msg):
    secs = int(num(get(msg, 'seconds', ('num', '0'))))
    nanos = int(num(get(msg, 'nanos', ('num', '0'))))
    total = secs * 10**9 + nanos
    sign = '-' if total < 0 else ''
    total = abs(total)
    return "duration('%s%d.%09ds')" % (sign, total // 10**9, total % 10**9)


def timestamp_text(msg):
    import datetime
    secs = int(num(get(msg, 'seconds', ('num', '0'))))
    nanos = int(num(get(msg, 'nanos', ('num', '0'))))
    t = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=secs)
    return "timestamp('%s.%09dZ')" % (t.strftime('%Y-%m-%dT%H:%M:%S'), nanos)


def value_cel(v):
    """A cel.expr.Value message as CEL literal text."""
    k, x = v[0]
    if k == 'int64_value':
        return '%d' % int(num(x), 0)
    if k == 'uint64_value':
        return '%du' % int(num(x), 0)
    if k == 'double_value':
        s = num(x)
        d = float(s)
        if math.isnan(d):
            return "double('NaN')"
        if math.isinf(d):
            return "double('%sInfinity')" % ('-' if d < 0 else '')
        return repr(d)
    if k == 'bool_value':
        return x[1]
    if k == 'string_value':
        return cel_string_lit(x[1])
    if k == 'bytes_value':
        return cel_bytes_lit(x[1], 'b')
    if k == 'null_value':
        return 'null'
    if k == 'type_value':
        return x[1].decode()
    if k == 'list_value':
        return '[' + ', '.join(value_cel(e) for e in getall(x, 'values')) + ']'
    if k == 'map_value':
        return '{' + ', '.join('%s: %s' % (value_cel(get(e, 'key')), value_cel(get(e, 'value')))
                               for e in getall(x, 'entries')) + '}'
    if k == 'object_value':
        ext, body = x[0]
        if ext == '[type.googleapis.com/google.protobuf.Duration]':
            return duration_text(body)
        if ext == '[type.googleapis.com/google.protobuf.Timestamp]':
            return timestamp_text(body)
        raise Skip('needs protobuf message %s' % ext.strip('[]').split('/')[-1])
    if k == 'enum_value':
        raise Skip('needs protobuf enums')
    raise Skip('value kind %s' % k)


def c_str(b):
    if isinstance(b, str):
        b = b.encode('utf-8')
    out = '"'
    prev_hex = False
    for c in b:
        ch = chr(c)
        if ch in '"\\':
            out += '\\' + ch
            prev_hex = False
        elif 32 <= c < 127 and ch != '?' and not (prev_hex and ch in '0123456789abcdefABCDEF'):
            out += ch
            prev_hex = False
        else:
            out += '\\%03o' % c
            prev_hex = False
    return out + '"'


def expected(v):
    """(kind, C initialiser fields) of an expected cel.expr.Value."""
    k, x = v[0]
    if k == 'int64_value':
        return 'CEL_EXP_INT', '.i = %dLL' % int(num(x), 0) if int(num(x), 0) != -2**63 else '.i = INT64_MIN'
    if k == 'uint64_value':
        return 'CEL_EXP_UINT', '.u = %dULL' % int(num(x), 0)
    if k == 'bool_value':
        return 'CEL_EXP_BOOL', '.i = %d' % (x[1] == 'true')
    if k == 'double_value':
        d = float(num(x))
        if math.isnan(d):
            lit = 'NAN'
        elif math.isinf(d):
            lit = '-INFINITY' if d < 0 else 'INFINITY'
        else:
            lit = repr(d)
        return 'CEL_EXP_DOUBLE', '.d = %s' % lit
    if k == 'string_value':
        return 'CEL_EXP_STRING', '.s = %s, .slen = %d' % (c_str(x[1]), len(x[1]))
    if k == 'bytes_value':
        return 'CEL_EXP_BYTES', '.s = %s, .slen = %d' % (c_str(x[1]), len(x[1]))
    return 'CEL_EXP_CEL', '.s = %s' % c_str(value_cel(v))


def convert(fname, path):
    with open(path, encoding='utf-8') as f:
        toks = list(tokens(f.read()))
    top, _ = parse_msg(toks, 0, None)
    rows = []
    for sec in getall(top, 'section'):
        sname = get(sec, 'name')[1].decode()
        for t in getall(sec, 'test'):
            name = get(t, 'name')[1].decode()
            expr = get(t, 'expr')[1]
            row = {'file': fname, 'name': sname + '/' + name, 'expr': expr, 'bind': [],
                   'kind': 'CEL_EXP_ERROR', 'init': '', 'skip': None,
                   'unchecked': get(t, 'disable_check') is not None}
            try:
                if get(t, 'container') is not None:
                    raise Skip('needs protobuf messages (container %s)' % get(t, 'container')[1].decode())
                if get(t, 'check_only') is not None or (get(t, 'typed_result') is not None and
                                                        get(get(t, 'typed_result'), 'result') is None):
                    raise Skip('check-only: static type deduction of the reference checker')
                if get(t, 'eval_error') is None and get(t, 'any_eval_errors') is None and \
                        get(t, 'unknown') is None and get(t, 'value') is None and \
                        get(t, 'typed_result') is None:
                    row['kind'], row['init'] = 'CEL_EXP_BOOL', '.i = 1'  # default: true
                if get(t, 'unknown') is not None or get(t, 'any_unknowns') is not None:
                    raise Skip('unknown-value evaluation (partial state) is not a keel feature')
                if b'TestAllTypes' in expr:
                    raise Skip('needs protobuf messages (TestAllTypes)')
                if re.search(rb'google\.protobuf\.(\w*Value|Any|Struct)\b', expr):
                    raise Skip('needs protobuf wrapper/JSON messages')
                for b in getall(t, 'bindings'):
                    bv = get(get(b, 'value'), 'value')
                    if bv is None:
                        raise Skip('binding is not a value')
                    row['bind'].append((get(b, 'key')[1].decode(), value_cel(bv)))
                bound = [n for n, _ in row['bind']]
                for te in getall(t, 'type_env'):
                    if get(te, 'function') is not None:
                        raise Skip('declares custom functions')
                    tn = get(te, 'name')[1].decode()
                    if tn not in bound:  # declared, unbound: an evaluation error
                        row['bind'].append((tn, None))
                val = get(t, 'value')
                tr = get(t, 'typed_result')
                if tr is not None:
                    val = get(tr, 'result')
                if val is not None:
                    if not val:
                        raise Skip('empty expected value')
                    row['kind'], row['init'] = expected(val)
            except Skip as s:
                row['skip'] = str(s)
            rows.append(row)
    return rows


def main():
    if len(sys.argv) != 2:
        sys.exit('usage: cel-conformance.py CEL_SPEC/tests/simple/testdata')
    rows = []
    for f in FILES:
        rows += convert(f, os.path.join(sys.argv[1], f + '.textproto'))
    out = sys.stdout
    out.write('/* Generated by scripts/cel-conformance.py from cel-spec tests/simple/testdata;\n'
              ' * do not edit. One row per conformance case; skip says why a case is not run. */\n')
    out.write('/* clang-format off */\n')
    for r in rows:
        bind = ', '.join('{ %s, %s }' % (c_str(n), c_str(v) if v is not None else 'NULL')
                         for n, v in r['bind'])
        out.write('{ %s, %s, %s, %d, %d, { %s }, %s, { %s }, %s },\n' % (
            c_str(r['file']), c_str(r['name']), c_str(r['expr']), len(r['expr']), r['unchecked'], bind,
            r['kind'], r['init'], c_str(r['skip']) if r['skip'] else 'NULL'))
    out.write('/* clang-format on */\n')


if __name__ == '__main__':
    main()
