//! The cqrs-es aggregate of the second peer: a post, the set of users who
//! like it and their count. A like by a user who already likes the post (or
//! an unlike by one who does not) is refused, which is why the aggregate
//! must hold the set and not just the count.

use std::collections::HashSet;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// One post's likes.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Post {
    pub likers: HashSet<String>,
    pub count: i64,
}

/// What a worker asks of a post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostCommand {
    Like { user: String },
    Unlike { user: String },
}

/// What happened to a post.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PostEvent {
    Liked { user: String },
    Unliked { user: String },
}

impl DomainEvent for PostEvent {
    fn event_type(&self) -> String {
        match self {
            PostEvent::Liked { .. } => "Liked",
            PostEvent::Unliked { .. } => "Unliked",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

/// Why a post refused a command: the input's fault, never retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    #[error("user {0} already likes this post")]
    AlreadyLiked(String),
    #[error("user {0} does not like this post")]
    NotLiked(String),
}

impl Aggregate for Post {
    const TYPE: &'static str = "post";
    type Command = PostCommand;
    type Event = PostEvent;
    type Error = PostError;
    type Services = ();

    async fn handle(
        &mut self,
        command: PostCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), PostError> {
        let event = match command {
            PostCommand::Like { user } if self.likers.contains(&user) => {
                return Err(PostError::AlreadyLiked(user))
            }
            PostCommand::Like { user } => PostEvent::Liked { user },
            PostCommand::Unlike { user } if !self.likers.contains(&user) => {
                return Err(PostError::NotLiked(user))
            }
            PostCommand::Unlike { user } => PostEvent::Unliked { user },
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: PostEvent) {
        match event {
            PostEvent::Liked { user } => {
                if self.likers.insert(user) {
                    self.count += 1;
                }
            }
            PostEvent::Unliked { user } => {
                if self.likers.remove(&user) {
                    self.count -= 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    type PostTest = TestFramework<Post>;

    fn like(user: &str) -> PostCommand {
        PostCommand::Like { user: user.into() }
    }

    fn unlike(user: &str) -> PostCommand {
        PostCommand::Unlike { user: user.into() }
    }

    fn liked(user: &str) -> PostEvent {
        PostEvent::Liked { user: user.into() }
    }

    fn unliked(user: &str) -> PostEvent {
        PostEvent::Unliked { user: user.into() }
    }

    #[test]
    fn a_first_like_is_liked() {
        PostTest::with(())
            .given_no_previous_events()
            .when(like("u-1"))
            .then_expect_events(vec![liked("u-1")]);
    }

    #[test]
    fn a_second_like_by_the_same_user_is_refused() {
        PostTest::with(())
            .given(vec![liked("u-1")])
            .when(like("u-1"))
            .then_expect_error(PostError::AlreadyLiked("u-1".into()));
    }

    #[test]
    fn an_unlike_needs_a_like_first() {
        PostTest::with(())
            .given_no_previous_events()
            .when(unlike("u-1"))
            .then_expect_error(PostError::NotLiked("u-1".into()));
        PostTest::with(())
            .given(vec![liked("u-1"), liked("u-2")])
            .when(unlike("u-1"))
            .then_expect_events(vec![unliked("u-1")]);
        PostTest::with(())
            .given(vec![liked("u-1"), unliked("u-1")])
            .when(like("u-1"))
            .then_expect_events(vec![liked("u-1")]);
    }

    #[test]
    fn the_count_follows_the_set() {
        let mut post = Post::default();
        for event in [liked("a"), liked("b"), unliked("a"), liked("c"), liked("a")] {
            post.apply(event);
        }
        assert_eq!(post.count, 3);
        assert_eq!(post.likers.len(), 3);
    }
}
