import re,sys,collections
def sigs(path, root):
    log=open(path,errors='replace').read()
    c=collections.Counter()
    for r in log.split('=================='):
        if 'WARNING: ThreadSanitizer' not in r: continue
        fr=re.findall(r'#\d+ (\S+?)(?:\(| ).*?'+re.escape(root)+r'/(\S+?):\d+', r)
        ours=[f"{fn}@{p}" for fn,p in fr if p.startswith(('engine','server','kernels'))]
        c[tuple(ours[:2])]+=1
    return c
a=sigs('/tmp/tsan-server-before.log','/tmp/before')
b=sigs('/tmp/tsan-server.log','/work/main')
print('our-code frames: before',sum(v for k,v in a.items() if k),'after',sum(v for k,v in b.items() if k))
print('only in after:')
for k,v in b.items():
    if k and k not in a: print(v,k)
print('only in before:')
for k,v in a.items():
    if k and k not in b: print(v,k)
