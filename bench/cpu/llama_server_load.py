#!/usr/bin/env python3
"""Load for llama.cpp's llama-server, shaped like sinkserve-bench's.

N concurrent sessions, each on its own thread, run T turns of M new tokens
through POST /completion with ignore_eos, so every turn generates exactly M
tokens. A session is a conversation: turn k sends the whole history so far
plus the next prompt with cache_prompt, so llama-server reuses its slot's
cache as a chat client would make it. Prints one line:
  sessions=N turns=T errors=E generated=G seconds=S tok_s=X
Standard library only (/usr/bin/python3 or any python3).

usage: llama_server_load.py --url http://127.0.0.1:8089 --sessions 16 --turns 3 --max-new-tokens 128
"""
import argparse
import json
import threading
import time
import urllib.request


def session(url, turns, max_new, prompt, results, index):
    history = ''
    generated = errors = 0
    for _ in range(turns):
        history += prompt
        body = json.dumps({'prompt': history, 'n_predict': max_new, 'ignore_eos': True,
                           'cache_prompt': True, 'temperature': 0, 'stream': False}).encode()
        request = urllib.request.Request(url + '/completion', data=body,
                                         headers={'Content-Type': 'application/json'})
        try:
            with urllib.request.urlopen(request, timeout=600) as response:
                answer = json.loads(response.read())
            generated += int(answer.get('tokens_predicted', 0))
            history += answer.get('content', '')
        except Exception:  # counted, as sinkserve-bench counts failed turns
            errors += 1
    results[index] = (generated, errors)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--url', required=True)
    parser.add_argument('--sessions', type=int, default=16)
    parser.add_argument('--turns', type=int, default=3)
    parser.add_argument('--max-new-tokens', type=int, default=128)
    parser.add_argument('--prompt', default='Once upon a time')
    args = parser.parse_args()
    if not (1 <= args.sessions <= 1024 and 1 <= args.turns <= 1000 and 1 <= args.max_new_tokens <= 100000):
        parser.error('sessions, turns and max-new-tokens must be positive and bounded')
    results = [None] * args.sessions
    threads = [threading.Thread(target=session, args=(args.url, args.turns, args.max_new_tokens, args.prompt,
                                                      results, i)) for i in range(args.sessions)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - start
    generated = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    print('sessions=%d turns=%d errors=%d generated=%d seconds=%.3f tok_s=%.1f' %
          (args.sessions, args.turns, errors, generated, seconds, generated / seconds))


if __name__ == '__main__':
    main()
