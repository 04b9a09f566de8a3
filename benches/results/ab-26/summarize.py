import json,sys,statistics as st
rows={}
for line in open(sys.argv[1]):
    d=json.loads(line); r=d['report']
    key=(r['connections'],r['payload'],r['in_flight'])
    cpu=r.get('server_cpu_percent') or 0
    us=cpu/100*1e6/r['msgs_per_sec'] if r['msgs_per_sec'] else None
    rows.setdefault(key,{}).setdefault(d['server'],[]).append((r['msgs_per_sec'],us))
names=sys.argv[2:]
print("| cell | "+" | ".join(f"{n} msgs/s median (min–max)" for n in names)+f" | {names[1]} / {names[0]} | server µs/msg "+" / ".join(names)+" |")
print("|---|"+"---:|"*(len(names)+2))
for key in sorted(rows):
    c,p,f=key
    cells=[];meds=[];uss=[]
    for n in names:
        v=[x[0] for x in rows[key][n]]; u=[x[1] for x in rows[key][n]]
        m=st.median(v); meds.append(m); uss.append(st.median(u))
        cells.append(f"{m/1000:,.0f} k ({min(v)/1000:,.0f}–{max(v)/1000:,.0f})")
    ps = f"{p//1024} KiB"
    print(f"| {c} × {ps} × {f} | "+" | ".join(cells)+f" | {meds[1]/meds[0]:.2f}× | "+" / ".join(f"{u:.2f}" for u in uss)+" |")
