use super::*;

#[test]
fn the_contract_is_the_capability_world_with_its_deps() {
    let text = wit_text();
    assert!(text.contains("world capability"), "{text}");
    assert!(text.contains("package wasi:config@0.2.0-rc.1;"), "{text}");
    assert!(
        text.contains("// ==> wit/deps/config/store.wit <=="),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let written = write_wit(&dir.path().join("wit")).unwrap();
    assert_eq!(written.len(), wit_files().len());
    let levee = std::fs::read_to_string(dir.path().join("wit/levee.wit")).unwrap();
    assert!(levee.contains("world capability"));
    assert!(dir.path().join("wit/deps/config/store.wit").is_file());
}

#[test]
fn names_are_checked() {
    for good in ["a", "my-fn", "fn2", "a-b-c9"] {
        validate_name(good).unwrap();
    }
    let cases = [
        ("", "is empty"),
        ("My-fn", "must start with a lowercase letter"),
        ("9fn", "must start with a lowercase letter"),
        ("-fn", "must start with a lowercase letter"),
        ("my_fn", "has '_'"),
        ("myFn", "has an uppercase letter"),
        ("my fn", "has a character that is not"),
        ("../x", "must start with a lowercase letter"),
        ("a/b", "has a character that is not"),
        ("fn-", "must not end with '-'"),
    ];
    for (bad, why) in cases {
        let e = validate_name(bad).unwrap_err().to_string();
        assert!(e.contains(why), "{bad:?}: {e}");
        assert!(e.contains("lowercase letters, digits and '-'"), "{e}");
    }
    let long = "a".repeat(MAX_NAME_LEN + 1);
    assert!(
        validate_name(&long)
            .unwrap_err()
            .to_string()
            .contains("too long")
    );
}

#[test]
fn a_bad_name_or_a_non_empty_dir_writes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("x");
    assert!(matches!(
        create("Bad", Lang::Js, &dir),
        Err(Error::InvalidName { .. })
    ));
    assert!(!dir.exists());

    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("keep.txt"), "mine").unwrap();
    for lang in [Lang::Rust, Lang::Python, Lang::Js] {
        let e = create("good", lang, &dir).unwrap_err();
        assert!(matches!(e, Error::NotEmpty(_)), "{e}");
        assert!(e.to_string().contains("not an empty directory"), "{e}");
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);

    let file = root.path().join("file");
    std::fs::write(&file, "x").unwrap();
    assert!(matches!(
        create("good", Lang::Python, &file),
        Err(Error::NotEmpty(_))
    ));
}

#[test]
fn every_language_writes_the_contract_a_build_script_and_the_manifest_entry() {
    for lang in [Lang::Rust, Lang::Python, Lang::Js] {
        let root = tempfile::tempdir().unwrap();
        // An existing empty directory is fine.
        let dir = root.path().join("hello-fn");
        std::fs::create_dir(&dir).unwrap();
        let p = create("hello-fn", lang, &dir).unwrap();
        assert!(p.dir.is_absolute());
        for f in [
            "wit/levee.wit",
            "wit/deps/config/store.wit",
            "README.md",
            "build.sh",
        ] {
            assert!(p.dir.join(f).is_file(), "{lang}: {f}");
            assert!(p.files.contains(&PathBuf::from(f)), "{lang}: {f}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(p.dir.join("build.sh"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o111, 0o111, "{lang}: build.sh is executable");
        }
        let m: toml::Value = toml::from_str(&p.manifest_entry).unwrap();
        let f = &m["functions"]["hello-fn"];
        assert_eq!(
            f["module"].as_str().unwrap(),
            p.module.display().to_string()
        );
        assert!(p.module.starts_with(&p.dir));
        assert!(f["memory_mb"].as_integer().unwrap() >= 16);
        let readme = std::fs::read_to_string(p.dir.join("README.md")).unwrap();
        assert!(readme.contains(p.manifest_entry.trim_end()), "{lang}");
        assert!(
            readme.contains(&p.build) || lang == Lang::Js,
            "{lang}: {readme}"
        );
        assert!(!readme.contains("{{"), "{lang}: an unfilled placeholder");
        for file in &p.files {
            let text = std::fs::read_to_string(p.dir.join(file)).unwrap();
            assert!(!text.contains("{{name}}"), "{lang}: {}", file.display());
        }
        let summary = p.summary();
        assert!(summary.contains("next steps"), "{summary}");
        assert!(summary.contains("[functions.hello-fn]"), "{summary}");
    }
}
