#!/usr/bin/python3
"""Counts test cases from a Bazel build-event JSON file and prints "N passed, N failed".

Each test target's test.xml (JUnit XML written by gtest or by Bazel for shell tests) gives the
cases. A target that failed without a readable test.xml (crash, timeout, build failure) counts
as one failed case, so a broken target can never disappear from the count.
Exit status: 0 when nothing failed and at least one test ran, else 1.
"""
import json
import sys
import xml.etree.ElementTree as ET
from urllib.parse import urlparse, unquote


def count_xml(path):
    root = ET.parse(path).getroot()
    passed = failed = 0
    for case in root.iter("testcase"):
        if case.get("status") == "notrun" or case.find("skipped") is not None:
            continue  # skipped cases (e.g. GPU tests on a machine without a GPU) are neither
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        else:
            passed += 1
    return passed, failed


def main(bep_path):
    passed = failed = 0
    results = {}
    build_failed = False
    with open(bep_path) as f:
        for line in f:
            event = json.loads(line)
            eid = event.get("id", {})
            if "testResult" in eid:
                label = eid["testResult"]["label"]
                res = event.get("testResult", {})
                xml = None
                for out in res.get("testActionOutput", []):
                    if out.get("name") == "test.xml":
                        xml = unquote(urlparse(out["uri"]).path)
                results[label] = (res.get("status"), xml)
            if "buildFinished" in eid or "buildFinished" in event:
                ok = event.get("finished", {}).get("overallSuccess",
                                                     event.get("buildFinished", {}).get("overallSuccess"))
                if ok is False:
                    build_failed = True
            if eid.get("targetCompleted") and event.get("completed", {}).get("success") is False:
                build_failed = True
    for label, (status, xml) in sorted(results.items()):
        p = f = 0
        if xml:
            try:
                p, f = count_xml(xml)
            except (OSError, ET.ParseError):
                p = f = 0
        if status != "PASSED" and f == 0:
            f = 1
            print(f"FAILED: {label} ({status})")
        elif f:
            print(f"FAILED: {label} ({f} case(s))")
        passed += p
        failed += f
    if build_failed and failed == 0:
        failed = 1
        print("FAILED: the build did not complete")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
